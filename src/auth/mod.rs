//! Who may call the `/v1` API: API keys with roles, driver sessions, the principal a bearer
//! token stands for, and the per-key bound on open event streams. The HTTP layer applies this
//! to every request, with the rate limits of [`crate::ratelimit`], in one middleware.
//!
//! - **API keys** (`gdk_` + 128 random bits) are sent as `Authorization: Bearer <key>` and
//!   stored only as their SHA-256: `{prefix}:apikey:<sha256>` (role, bound driver, key id) and
//!   the index `{prefix}:apikeys` (key id → metadata, for listing and revocation). Roles:
//!   `admin` (everything), `dispatcher` (everything but key administration), `driver` (bound
//!   to one driver id: its own location, status, state, offers and sessions). See `keys.rs`.
//! - **The bootstrap admin key** comes from the `admin_key` setting (`GEODISPATCH_ADMIN_KEY`)
//!   and is never stored.
//! - **Sessions** (`gds_` + 128 random bits): a driver key is exchanged for a token whose
//!   record `{prefix}:session:<sha256>` holds the key id, role and driver (no secret), expires
//!   after `session_idle_ms` without use (each use extends it) and at the latest
//!   `session_max_age_ms` after creation (`lua/touch_session.lua`). See `sessions.rs`.

mod keys;
mod scripts;
mod sessions;
mod streams;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

pub(crate) use keys::{CreatedKey, KeyList, NewKey, create_key, issue_key, list_keys, revoke_key};
pub(crate) use sessions::{Session, close_session, open_session};
pub(crate) use streams::{MAX_STREAMS, StreamCounter};

use crate::config::Settings;
use crate::domain::FieldError;
use crate::store::Store;
use crate::store::scripts::{self as script_run, TOUCH_SESSION, evalsha};
use scripts::{TouchReply, TouchSessionArgs};

/// What went wrong in authentication, key administration or sessions, in the words of the
/// capability; the HTTP layer turns each into its answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AuthError {
    /// A key request is invalid (role and driver binding, name length); nothing was written.
    #[error("{}", FieldError::list(.0))]
    Validation(Vec<FieldError>),
    /// There is no API key with this id.
    #[error("no key {0}")]
    KeyNotFound(String),
    /// A driver key (or its session) tried to act for another driver; nothing was written.
    #[error(
        "this driver key is bound to driver {own}; it may not act for driver {requested}; nothing was written"
    )]
    OtherDriver {
        /// The driver the key is bound to.
        own: String,
        /// The driver it tried to act for.
        requested: String,
    },
    /// A driver key bound to no driver acts for none (fails closed).
    #[error("this driver key is bound to no driver; nothing was written")]
    UnboundDriverKey,
    /// Sessions were asked for while authentication is disabled: there is no caller to bind
    /// them to.
    #[error("sessions need authentication to be enabled")]
    SessionsNeedAuthentication,
    /// A session token tried to open a session (a session must not outlive its key's choice).
    #[error("a session cannot open another session; use the driver's API key")]
    SessionFromSession,
    /// Logging out needs the session token, and the caller used an API key.
    #[error("log out with the session token, not an API key")]
    NotASession,
    /// Redis failed while doing `context`.
    #[error("{context}: {source}")]
    Redis {
        /// What was being done.
        context: &'static str,
        /// The Redis error.
        #[source]
        source: redis::RedisError,
    },
    /// Anything unexpected (e.g. a key index entry that is not valid JSON).
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// `map_err` adapter naming what Redis was doing.
fn redis_failed(context: &'static str) -> impl FnOnce(redis::RedisError) -> AuthError {
    move |source| AuthError::Redis { context, source }
}

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Role {
    /// Everything, including key administration.
    Admin,
    /// Everything but key administration: ingest, search, ranking, orders, dispatch, events.
    Dispatcher,
    /// One driver's own location, status, state, offers and sessions.
    Driver,
}

impl Role {
    /// Lower-case name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Dispatcher => "dispatcher",
            Role::Driver => "driver",
        }
    }

    /// Parse the lower-case name.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        [Role::Admin, Role::Dispatcher, Role::Driver]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

/// Who is calling, as established from the bearer token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Principal {
    /// The key's id (`bootstrap` for the bootstrap admin key).
    pub(crate) key_id: String,
    /// Its role.
    pub(crate) role: Role,
    /// The driver a driver key is bound to.
    pub(crate) driver_id: Option<String>,
    /// The session token's hash, when the caller used a session.
    pub(crate) session: Option<String>,
}

impl Principal {
    /// Refused unless this principal may act for `driver`.
    pub(crate) fn check_driver(&self, driver: &str) -> Result<(), AuthError> {
        match (self.role, &self.driver_id) {
            (Role::Driver, Some(own)) if own != driver => Err(AuthError::OtherDriver {
                own: own.clone(),
                requested: driver.to_owned(),
            }),
            (Role::Driver, None) => Err(AuthError::UnboundDriverKey),
            _ => Ok(()),
        }
    }
}

/// SHA-256 of a secret, in hex: the only form in which keys and session tokens are stored.
pub(crate) fn digest(secret: &str) -> String {
    let hash = Sha256::digest(secret.as_bytes());
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new random secret with `prefix` (`gdk_`, `gds_`): 128 random bits in hex.
pub(crate) fn new_secret(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// API keys this instance looked up recently (by digest), so that a request costs no extra
/// round trip; entries live `auth_cache_ms`.
#[derive(Debug, Default)]
pub(crate) struct AuthCache {
    entries: Mutex<HashMap<String, (Option<Principal>, Instant)>>,
}

impl AuthCache {
    fn get(&self, digest: &str, ttl: Duration) -> Option<Option<Principal>> {
        let map = self.entries.lock().expect("not poisoned");
        map.get(digest)
            .filter(|(_, at)| at.elapsed() < ttl)
            .map(|(p, _)| p.clone())
    }

    fn put(&self, digest: String, principal: Option<Principal>) {
        let mut map = self.entries.lock().expect("not poisoned");
        if map.len() > 100_000 {
            map.clear();
        }
        map.insert(digest, (principal, Instant::now()));
    }

    fn forget(&self, digest: &str) {
        self.entries.lock().expect("not poisoned").remove(digest);
    }
}

/// Resolve a bearer token to a principal (`None`: unknown, revoked or expired).
pub(crate) async fn authenticate(
    store: &Store,
    settings: &Settings,
    cache: &AuthCache,
    token: &str,
) -> Result<Option<Principal>, AuthError> {
    // Compared as digests, so that how long the comparison takes says nothing about the key.
    if let Some(admin) = &settings.admin_key
        && digest(admin.expose_secret()) == digest(token)
    {
        return Ok(Some(Principal {
            key_id: "bootstrap".to_owned(),
            role: Role::Admin,
            driver_id: None,
            session: None,
        }));
    }
    let d = digest(token);
    let keys = store.keys();
    let mut conn = store.conn();
    if token.starts_with("gds_") {
        let cmd = evalsha(
            &TOUCH_SESSION,
            &[keys.session(&d), keys.api_key_index()],
            &TouchSessionArgs {
                idle_ms: settings.session_idle_ms,
            }
            .argv(),
        );
        let reply = script_run::run(&mut conn, &TOUCH_SESSION, &cmd)
            .await
            .and_then(TouchReply::decode)
            .map_err(redis_failed("session"))?;
        return Ok(match reply {
            TouchReply::Live {
                key_id,
                role,
                driver,
                expires_ms: _,
            } => Role::parse(&role).map(|role| Principal {
                key_id,
                role,
                driver_id: (!driver.is_empty()).then_some(driver),
                session: Some(d),
            }),
            TouchReply::Gone => None,
        });
    }
    let ttl = Duration::from_millis(settings.auth_cache_ms);
    if let Some(hit) = cache.get(&d, ttl) {
        return Ok(hit);
    }
    let h: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(keys.api_key(&d))
        .query_async(&mut conn)
        .await
        .map_err(redis_failed("api key"))?;
    let principal = match (h.get("key_id"), h.get("role").and_then(|r| Role::parse(r))) {
        (Some(key_id), Some(role)) => Some(Principal {
            key_id: key_id.clone(),
            role,
            driver_id: h.get("driver").filter(|d| !d.is_empty()).cloned(),
            session: None,
        }),
        _ => None,
    };
    cache.put(d, principal.clone());
    Ok(principal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_driver_principal_acts_only_for_its_driver() {
        let p = Principal {
            key_id: "k".into(),
            role: Role::Driver,
            driver_id: Some("a".into()),
            session: None,
        };
        assert!(p.check_driver("a").is_ok());
        assert!(matches!(
            p.check_driver("b"),
            Err(AuthError::OtherDriver { ref own, ref requested }) if own == "a" && requested == "b"
        ));
        let unbound = Principal {
            driver_id: None,
            ..p.clone()
        };
        assert!(
            matches!(unbound.check_driver("a"), Err(AuthError::UnboundDriverKey)),
            "an unbound driver key fails closed"
        );
        let staff = Principal {
            role: Role::Dispatcher,
            driver_id: None,
            ..p
        };
        assert!(staff.check_driver("b").is_ok());
    }

    #[test]
    fn digests_are_hex_sha256() {
        assert_eq!(
            digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(new_secret("gdk_").starts_with("gdk_"));
        assert_eq!(new_secret("gdk_").len(), 36);
    }
}
