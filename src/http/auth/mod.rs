//! Protection of the `/v1` API: one middleware ([`middleware`]) in front of every route
//! authenticates the bearer token ([`crate::auth`]), authorizes the route by its policy
//! ([`route_policy`]) and counts it against its rate limit ([`crate::ratelimit`]).
//!
//! A route's policy says who may call it and which rate-limit class and subject it counts
//! against. A driver writing another driver's data gets 403 and nothing is written (the path
//! is checked here; a driver's answer to an offer is checked against its body by the orders
//! handler, with [`principal`]).

mod policy;

use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpRequest, ResponseError, web};

use crate::auth::{AuthCache, AuthError, Principal, StreamCounter, authenticate};
use crate::config::Settings;
use crate::http::error::{ApiError, redis_error};
use crate::ratelimit::{self, Policy, RateLimitError};
use crate::store::Store;
use policy::{Class, is_public, route_policy};

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::Validation(errors) => ApiError::Validation(errors),
            AuthError::KeyNotFound(_) => ApiError::NotFound(err.to_string()),
            AuthError::OtherDriver { .. }
            | AuthError::UnboundDriverKey
            | AuthError::SessionsNeedAuthentication
            | AuthError::SessionFromSession => ApiError::Forbidden(err.to_string()),
            AuthError::NotASession => ApiError::field("Authorization", err.to_string()),
            AuthError::Redis { context, source } => redis_error(context)(source),
            AuthError::Internal(err) => ApiError::Internal(err),
        }
    }
}

impl From<RateLimitError> for ApiError {
    fn from(err: RateLimitError) -> Self {
        match err {
            RateLimitError::Redis(source) => redis_error("rate limit")(source),
        }
    }
}

/// The caller as established by the middleware (`None` when authentication is disabled).
pub(crate) fn principal(req: &HttpRequest) -> Option<Principal> {
    req.extensions().get::<Principal>().cloned()
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(req: &ServiceRequest) -> Option<String> {
    let value = req.headers().get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
        .filter(|t| !t.is_empty())
}

/// Shared state of the middleware, also read by the event stream handler (its stream bound).
#[derive(Clone)]
pub(crate) struct Guard {
    /// Redis access.
    pub(crate) store: Store,
    /// Settings.
    pub(crate) settings: Arc<Settings>,
    /// Key lookups of this instance.
    pub(crate) cache: Arc<AuthCache>,
    /// Open event streams of this instance.
    pub(crate) streams: Arc<StreamCounter>,
    policies: Arc<[(Class, Policy); 3]>,
}

impl Guard {
    /// The middleware's state for `settings` (rate-limit specs were validated at load).
    pub(crate) fn new(store: Store, settings: Arc<Settings>) -> Self {
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

/// The middleware: authenticate, authorize by [`route_policy`], rate-limit, and add the
/// `RateLimit` headers to the answer. Only the [`is_public`] routes pass without a key.
///
/// Every decision uses the path as the router sees it (`match_info()`, percent-decoded
/// but for `/`, `%` and `+`), never the raw request path: `/%761/admin/keys` routes to
/// `/v1/admin/keys` and must be judged as such.
pub(crate) async fn middleware(
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
            Err(e) => return Ok(reject(req, e.into())),
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
                return Ok(reject(req, e.into()));
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
            Err(e) => return Ok(reject(req, e.into())),
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
    use crate::domain::FieldError;

    #[test]
    fn auth_errors_keep_their_status_code_and_detail() {
        let cases = [
            (
                AuthError::Validation(vec![FieldError::new("name", "at most 100 characters")]),
                422,
                "validation-error",
                "name: at most 100 characters",
            ),
            (
                AuthError::KeyNotFound("key_1".to_owned()),
                404,
                "not-found",
                "no key key_1",
            ),
            (
                AuthError::OtherDriver {
                    own: "a".to_owned(),
                    requested: "b".to_owned(),
                },
                403,
                "forbidden",
                "this driver key is bound to driver a; it may not act for driver b; nothing was written",
            ),
            (
                AuthError::UnboundDriverKey,
                403,
                "forbidden",
                "this driver key is bound to no driver; nothing was written",
            ),
            (
                AuthError::SessionsNeedAuthentication,
                403,
                "forbidden",
                "sessions need authentication to be enabled",
            ),
            (
                AuthError::SessionFromSession,
                403,
                "forbidden",
                "a session cannot open another session; use the driver's API key",
            ),
            (
                AuthError::NotASession,
                422,
                "validation-error",
                "Authorization: log out with the session token, not an API key",
            ),
            (
                AuthError::Internal(anyhow::anyhow!("secret cause")),
                500,
                "internal-error",
                "an unexpected error occurred; it has been logged with this request's id",
            ),
        ];
        for (err, status, code, detail) in cases {
            let problem = ApiError::from(err).problem();
            assert_eq!(
                (
                    problem.status,
                    problem.type_.as_str(),
                    problem.detail.as_str()
                ),
                (status, format!("/problems/{code}").as_str(), detail)
            );
        }
    }
}
