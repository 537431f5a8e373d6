//! Protection of the `/v1` API: API keys with roles, driver sessions, and the rate limits of
//! [`crate::ratelimit`], applied by one middleware ([`middleware`]) in front of every route.
//!
//! - **API keys** (`gdk_` + 128 random bits) are sent as `Authorization: Bearer <key>` and
//!   stored only as their SHA-256: `{prefix}:apikey:<sha256>` (role, bound driver, key id) and
//!   the index `{prefix}:apikeys` (key id → metadata, for listing and revocation). Roles:
//!   `admin` (everything), `dispatcher` (everything but key administration), `driver` (bound
//!   to one driver id: its own location, status, state, offers and sessions).
//! - **The bootstrap admin key** comes from the `admin_key` setting (`GEODISPATCH_ADMIN_KEY`)
//!   and is never stored.
//! - **Sessions** (`gds_` + 128 random bits): `POST /v1/sessions` exchanges a driver key for a
//!   token whose record `{prefix}:session:<sha256>` holds the key id, role and driver (no
//!   secret), expires after `session_idle_ms` without use (each use extends it) and at the
//!   latest `session_max_age_ms` after creation (`lua/touch_session.lua`).
//! - **Route policy** ([`route_policy`]): who may call a route and which rate-limit class and
//!   subject it counts against. A driver writing another driver's data gets 403 and nothing
//!   is written (the path is checked here; a driver's answer to an offer is checked against
//!   its body by the orders handler).

mod routes;

use crate::store::scripts::TOUCH_SESSION;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::HttpMessage;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{ResponseError, web};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

pub use routes::{configure, principal};

use crate::config::Settings;
use crate::http::error::ApiError;
use crate::ratelimit::{self, Policy};
use crate::store::Store;
use crate::store::scripts::{self as script_run, evalsha};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including key administration.
    Admin,
    /// Everything but key administration: ingest, search, ranking, orders, dispatch, events.
    Dispatcher,
    /// One driver's own location, status, state, offers and sessions.
    Driver,
}

impl Role {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Dispatcher => "dispatcher",
            Role::Driver => "driver",
        }
    }

    /// Parse the lower-case name.
    pub fn parse(s: &str) -> Option<Self> {
        [Role::Admin, Role::Dispatcher, Role::Driver]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

/// Who is calling, as established by the middleware (in the request's extensions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The key's id (`bootstrap` for the bootstrap admin key).
    pub key_id: String,
    /// Its role.
    pub role: Role,
    /// The driver a driver key is bound to.
    pub driver_id: Option<String>,
    /// The session token's hash, when the caller used a session.
    pub session: Option<String>,
}

impl Principal {
    /// 403 unless this principal may act for `driver`.
    pub fn check_driver(&self, driver: &str) -> Result<(), ApiError> {
        match (self.role, &self.driver_id) {
            (Role::Driver, Some(own)) if own != driver => Err(ApiError::Forbidden(format!(
                "this driver key is bound to driver {own}; it may not act for driver {driver}; nothing was written"
            ))),
            (Role::Driver, None) => Err(ApiError::Forbidden(
                "this driver key is bound to no driver; nothing was written".to_owned(),
            )),
            _ => Ok(()),
        }
    }
}

/// SHA-256 of a secret, in hex: the only form in which keys and session tokens are stored.
pub fn digest(secret: &str) -> String {
    let hash = Sha256::digest(secret.as_bytes());
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new random secret with `prefix` (`gdk_`, `gds_`): 128 random bits in hex.
pub fn new_secret(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// Metadata of an API key (never the key itself).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"key_id": "key_3f2a9c1d7e5b4a60", "role": "driver", "driver_id": "drv-1", "name": "phone of drv-1", "created_at": "2026-11-24T10:00:00Z"}))]
pub struct KeyInfo {
    /// Key id (for listing and revocation).
    pub key_id: String,
    /// Role.
    pub role: Role,
    /// The driver a driver key is bound to.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub driver_id: Option<String>,
    /// Free-form label.
    #[serde(default)]
    pub name: String,
    /// Creation time.
    pub created_at: String,
    /// SHA-256 of the key (internal: how the key's record is found).
    #[serde(skip_serializing, default)]
    #[schema(ignore)]
    pub digest: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredMeta {
    role: Role,
    driver_id: Option<String>,
    name: String,
    created_at: String,
    digest: String,
}

/// Create and store a key; returns the secret (shown once) and its metadata.
pub async fn create_key(
    store: &Store,
    role: Role,
    driver_id: Option<String>,
    name: &str,
) -> Result<(String, KeyInfo), ApiError> {
    let secret = new_secret("gdk_");
    let d = digest(&secret);
    let key_id = format!("key_{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
    let created_at = crate::domain::rfc3339_ms(store.local_now_ms());
    let meta = StoredMeta {
        role,
        driver_id: driver_id.clone(),
        name: name.to_owned(),
        created_at: created_at.clone(),
        digest: d.clone(),
    };
    let keys = store.keys();
    let mut conn = store.conn();
    let _: () = redis::pipe()
        .atomic()
        .cmd("HSET")
        .arg(keys.api_key(&d))
        .arg("key_id")
        .arg(&key_id)
        .arg("role")
        .arg(role.as_str())
        .arg("driver")
        .arg(driver_id.as_deref().unwrap_or(""))
        .ignore()
        .cmd("HSET")
        .arg(keys.api_key_index())
        .arg(&key_id)
        .arg(serde_json::to_string(&meta).map_err(anyhow::Error::from)?)
        .ignore()
        .query_async(&mut conn)
        .await
        .map_err(crate::http::error::redis_error("create key"))?;
    Ok((
        secret,
        KeyInfo {
            key_id,
            role,
            driver_id,
            name: name.to_owned(),
            created_at,
            digest: d,
        },
    ))
}

/// Every key's metadata.
pub async fn list_keys(store: &Store) -> Result<Vec<KeyInfo>, ApiError> {
    let mut conn = store.conn();
    let all: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(store.keys().api_key_index())
        .query_async(&mut conn)
        .await
        .map_err(crate::http::error::redis_error("list keys"))?;
    let mut out: Vec<KeyInfo> = all
        .into_iter()
        .filter_map(|(key_id, json)| {
            let m: StoredMeta = serde_json::from_str(&json).ok()?;
            Some(KeyInfo {
                key_id,
                role: m.role,
                driver_id: m.driver_id,
                name: m.name,
                created_at: m.created_at,
                digest: m.digest,
            })
        })
        .collect();
    out.sort_by(|a, b| {
        a.created_at
            .cmp(&b.created_at)
            .then(a.key_id.cmp(&b.key_id))
    });
    Ok(out)
}

/// Revoke a key (its sessions die on their next use); `false` when there is no such key.
pub async fn revoke_key(store: &Store, cache: &AuthCache, key_id: &str) -> Result<bool, ApiError> {
    let keys = store.keys();
    let mut conn = store.conn();
    let meta: Option<String> = redis::cmd("HGET")
        .arg(keys.api_key_index())
        .arg(key_id)
        .query_async(&mut conn)
        .await
        .map_err(crate::http::error::redis_error("revoke key"))?;
    let Some(meta) = meta else {
        return Ok(false);
    };
    let meta: StoredMeta = serde_json::from_str(&meta).map_err(anyhow::Error::from)?;
    let _: () = redis::pipe()
        .atomic()
        .cmd("DEL")
        .arg(keys.api_key(&meta.digest))
        .ignore()
        .cmd("HDEL")
        .arg(keys.api_key_index())
        .arg(key_id)
        .ignore()
        .query_async(&mut conn)
        .await
        .map_err(crate::http::error::redis_error("revoke key"))?;
    cache.forget(&meta.digest);
    Ok(true)
}

/// API keys this instance looked up recently (by digest), so that a request costs no extra
/// round trip; entries live `auth_cache_ms`.
#[derive(Debug, Default)]
pub struct AuthCache {
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

/// Open event streams per key in this instance (bounded by `sse_max_per_key`), and in all
/// (bounded by [`MAX_STREAMS`]): each holds a pooled Redis connection, which the queue workers
/// need too.
#[derive(Debug, Default)]
pub struct StreamCounter {
    open: Mutex<HashMap<String, u64>>,
}

/// Open event streams per instance at most: half of the dedicated Redis connection pool.
pub const MAX_STREAMS: u64 = 32;

/// One open event stream; the count goes down when it is dropped.
#[derive(Debug)]
pub struct StreamSlot {
    counter: Arc<StreamCounter>,
    key_id: String,
}

impl StreamCounter {
    /// Take a slot for `key_id`, or `None` when it already has `max` open streams.
    pub fn acquire(self: &Arc<Self>, key_id: &str, max: u64) -> Option<StreamSlot> {
        let mut open = self.open.lock().expect("not poisoned");
        if open.values().sum::<u64>() >= MAX_STREAMS {
            return None;
        }
        let n = open.entry(key_id.to_owned()).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(StreamSlot {
            counter: self.clone(),
            key_id: key_id.to_owned(),
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.counter.open.lock().expect("not poisoned");
        if let Some(n) = open.get_mut(&self.key_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.key_id);
            }
        }
    }
}

/// Resolve a bearer token to a principal (`None`: unknown, revoked or expired).
pub async fn authenticate(
    store: &Store,
    settings: &Settings,
    cache: &AuthCache,
    token: &str,
) -> Result<Option<Principal>, ApiError> {
    if let Some(admin) = &settings.admin_key
        && digest(admin) == digest(token)
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
            &[settings.session_idle_ms],
        );
        let s: Vec<String> = script_run::run(&mut conn, &TOUCH_SESSION, &cmd)
            .await
            .map_err(crate::http::error::redis_error("session"))?;
        return Ok(match s.as_slice() {
            [key_id, role, driver, _] => Role::parse(role).map(|role| Principal {
                key_id: key_id.clone(),
                role,
                driver_id: (!driver.is_empty()).then(|| driver.clone()),
                session: Some(d),
            }),
            _ => None,
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
        .map_err(crate::http::error::redis_error("api key"))?;
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

/// The rate-limit class of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Location and status updates (per driver).
    Location,
    /// Order creation and dispatch (per key).
    Dispatch,
    /// Everything else (per key).
    Default,
}

impl Class {
    /// Name used in keys and headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Location => "location",
            Class::Dispatch => "dispatch",
            Class::Default => "default",
        }
    }
}

/// Who may call a route and what it counts against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePolicy {
    /// Roles allowed.
    pub roles: &'static [Role],
    /// A driver may call it only for the driver id in this path segment (index).
    pub own_driver_segment: Option<usize>,
    /// Rate-limit class.
    pub class: Class,
}

const ALL: &[Role] = &[Role::Admin, Role::Dispatcher, Role::Driver];
const STAFF: &[Role] = &[Role::Admin, Role::Dispatcher];
const ADMIN: &[Role] = &[Role::Admin];
const DRIVER: &[Role] = &[Role::Driver];

/// The policy of `method path` (a `/v1/…` path).
pub fn route_policy(method: &Method, path: &str) -> RoutePolicy {
    let seg: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let p = |roles, own, class| RoutePolicy {
        roles,
        own_driver_segment: own,
        class,
    };
    match (method.as_str(), seg.as_slice()) {
        (_, ["v1", "admin", ..]) => p(ADMIN, None, Class::Default),
        ("PUT", ["v1", "drivers", _, "location" | "status"]) => p(ALL, Some(2), Class::Location),
        ("GET", ["v1", "drivers", id, ..]) if *id != "nearby" => p(ALL, Some(2), Class::Default),
        (
            "POST",
            [
                "v1",
                "orders",
                _,
                "accept" | "reject" | "pickup" | "deliver",
            ],
        ) => {
            // The body's driver_id is checked against the key by the handler.
            p(ALL, None, Class::Default)
        }
        ("POST", ["v1", "orders"]) | ("POST", ["v1", "orders", _, "dispatch"]) => {
            p(STAFF, None, Class::Dispatch)
        }
        ("POST", ["v1", "sessions"]) => p(DRIVER, None, Class::Default),
        ("DELETE", ["v1", "sessions", "current"]) => p(ALL, None, Class::Default),
        _ => p(STAFF, None, Class::Default),
    }
}

fn bearer(req: &ServiceRequest) -> Option<String> {
    let value = req.headers().get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
        .filter(|t| !t.is_empty())
}

/// Shared state of the middleware.
#[derive(Clone)]
pub struct Guard {
    /// Redis access.
    pub store: Store,
    /// Settings.
    pub settings: Arc<Settings>,
    /// Key lookups of this instance.
    pub cache: Arc<AuthCache>,
    /// Open event streams of this instance.
    pub streams: Arc<StreamCounter>,
    policies: Arc<[(Class, Policy); 3]>,
}

impl Guard {
    /// The middleware's state for `settings` (rate-limit specs were validated at load).
    pub fn new(store: Store, settings: Arc<Settings>) -> Self {
        let parse = |s: &str| Policy::parse(s).expect("validated when the settings were loaded");
        let policies = Arc::new([
            (Class::Location, parse(&settings.rate_limit_location)),
            (Class::Dispatch, parse(&settings.rate_limit_dispatch)),
            (Class::Default, parse(&settings.rate_limit_default)),
        ]);
        Self {
            store,
            settings,
            cache: Arc::new(AuthCache::default()),
            streams: Arc::new(StreamCounter::default()),
            policies,
        }
    }

    fn policy(&self, class: Class) -> Policy {
        self.policies
            .iter()
            .find(|(c, _)| *c == class)
            .map(|(_, p)| *p)
            .expect("every class has a policy")
    }
}

fn reject<B>(req: ServiceRequest, err: ApiError) -> ServiceResponse<EitherBody<B>> {
    let mut response = err.error_response();
    if matches!(err, ApiError::Unauthorized(_)) {
        response.headers_mut().insert(
            HeaderName::from_static("www-authenticate"),
            HeaderValue::from_static("Bearer realm=\"geodispatch\""),
        );
    }
    req.into_response(response).map_into_right_body()
}

/// Routes anyone may call: health, metrics, the API document and its UI, the map page.
fn is_public(path: &str) -> bool {
    matches!(
        path,
        "/healthz"
            | "/readyz"
            | "/metrics"
            | "/openapi.json"
            | "/docs"
            | "/map"
            | "/map/cities.geojson"
    ) || path.starts_with("/docs/")
}

/// The middleware: authenticate, authorize by [`route_policy`], rate-limit, and add the
/// `RateLimit` headers to the answer. Only the [`is_public`] routes pass without a key.
///
/// Every decision uses the path as the router sees it (`match_info()`, percent-decoded
/// but for `/`, `%` and `+`), never the raw request path: `/%761/admin/keys` routes to
/// `/v1/admin/keys` and must be judged as such.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody + 'static>>, actix_web::Error> {
    let path = req.match_info().as_str().to_owned();
    if is_public(&path) {
        return Ok(next.call(req).await?.map_into_left_body());
    }
    let Some(guard) = req
        .app_data::<web::Data<Guard>>()
        .map(|g| g.get_ref().clone())
    else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let policy = route_policy(req.method(), &path);
    // The peer address, not `X-Forwarded-For`: a client must not pick its own bucket.
    let mut subject = req
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|| "unknown".to_owned());
    if guard.settings.auth_enabled {
        let Some(token) = bearer(&req) else {
            return Ok(reject(
                req,
                ApiError::Unauthorized(
                    "send an API key or session token as `Authorization: Bearer <token>`"
                        .to_owned(),
                ),
            ));
        };
        let principal = match authenticate(&guard.store, &guard.settings, &guard.cache, &token)
            .await
        {
            Ok(Some(p)) => p,
            Ok(None) => {
                return Ok(reject(
                    req,
                    ApiError::Unauthorized(
                        "the API key or session token is unknown, revoked or expired".to_owned(),
                    ),
                ));
            }
            Err(e) => return Ok(reject(req, e)),
        };
        if !policy.roles.contains(&principal.role) {
            let detail = format!(
                "a {} key may not call {} {}",
                principal.role.as_str(),
                req.method(),
                path
            );
            return Ok(reject(req, ApiError::Forbidden(detail)));
        }
        if let Some(i) = policy.own_driver_segment {
            let driver = path.split('/').nth(i + 1).unwrap_or_default().to_owned();
            if let Err(e) = principal.check_driver(&driver) {
                return Ok(reject(req, e));
            }
        }
        subject = principal.key_id.clone();
        req.extensions_mut().insert(principal);
    }
    if policy.class == Class::Location {
        subject = path.split('/').nth(3).unwrap_or_default().to_owned();
    }
    if !guard.settings.rate_limits_enabled {
        return Ok(next.call(req).await?.map_into_left_body());
    }
    let rate = guard.policy(policy.class);
    let decision =
        match ratelimit::check(&guard.store, policy.class.as_str(), &rate, &subject).await {
            Ok(d) => d,
            Err(e) => {
                return Ok(reject(
                    req,
                    crate::http::error::redis_error("rate limit")(e),
                ));
            }
        };
    let headers = decision.headers(policy.class.as_str(), &rate);
    if !decision.allowed {
        crate::metrics::inc(
            "geodispatch_rate_limit_rejections_total",
            &[("class", policy.class.as_str())],
        );
        let retry = decision.retry_after_s();
        let mut response = ApiError::TooManyRequests {
            detail: format!(
                "rate limit of class {} exceeded; retry in {retry} s",
                policy.class.as_str()
            ),
            retry_after: retry,
        }
        .error_response();
        for (name, value) in headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                response
                    .headers_mut()
                    .insert(HeaderName::from_static(name), v);
            }
        }
        return Ok(req.into_response(response).map_into_right_body());
    }
    let mut res = next.call(req).await?;
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            res.headers_mut().insert(HeaderName::from_static(name), v);
        }
    }
    Ok(res.map_into_left_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_policies_give_drivers_only_their_own_data() {
        let put = Method::PUT;
        let p = route_policy(&put, "/v1/drivers/drv-1/location");
        assert_eq!(
            (p.roles, p.own_driver_segment, p.class),
            (ALL, Some(2), Class::Location)
        );
        assert_eq!(
            route_policy(&Method::GET, "/v1/drivers/nearby").roles,
            STAFF
        );
        assert_eq!(
            route_policy(&Method::POST, "/v1/locations/batch").roles,
            STAFF
        );
        assert_eq!(
            route_policy(&Method::POST, "/v1/orders").class,
            Class::Dispatch
        );
        assert_eq!(
            route_policy(&Method::POST, "/v1/orders/o1/dispatch").roles,
            STAFF
        );
        assert_eq!(
            route_policy(&Method::POST, "/v1/orders/o1/accept").roles,
            ALL
        );
        assert_eq!(route_policy(&Method::GET, "/v1/admin/keys").roles, ADMIN);
        assert_eq!(route_policy(&Method::GET, "/v1/events").roles, STAFF);
    }

    #[test]
    fn a_driver_principal_acts_only_for_its_driver() {
        let p = Principal {
            key_id: "k".into(),
            role: Role::Driver,
            driver_id: Some("a".into()),
            session: None,
        };
        assert!(p.check_driver("a").is_ok());
        assert!(matches!(p.check_driver("b"), Err(ApiError::Forbidden(_))));
        let unbound = Principal {
            driver_id: None,
            ..p.clone()
        };
        assert!(
            unbound.check_driver("a").is_err(),
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
    fn only_health_docs_metrics_and_the_map_are_public() {
        for open in [
            "/healthz",
            "/readyz",
            "/metrics",
            "/openapi.json",
            "/docs",
            "/docs/index.html",
            "/map",
            "/map/cities.geojson",
        ] {
            assert!(is_public(open), "{open}");
        }
        for closed in [
            "/v1/cities",
            "/",
            "/v2/x",
            "/mapx",
            "/healthz/x",
            "/map/other",
        ] {
            assert!(!is_public(closed), "{closed}");
        }
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
