//! The one error type of the HTTP boundary, rendered as RFC 9457 `application/problem+json`.
//!
//! Every handler returns `Result<_, ApiError>`. Client errors say precisely what was wrong
//! (with the offending fields for validation errors); internal errors are logged with their
//! whole cause chain and answered with a generic message, so nothing internal leaks.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

pub(crate) use crate::domain::FieldError;

/// Media type of every error body.
pub(crate) const PROBLEM_JSON: &str = "application/problem+json";

/// RFC 9457 problem details, the body of every 4xx and 5xx answer.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "type": "/problems/validation-error",
    "title": "Request validation failed",
    "status": 422,
    "detail": "lat: must be between -85.05112878 and 85.05112878 (Redis GEO limit)",
    "errors": [{"field": "lat", "message": "must be between -85.05112878 and 85.05112878 (Redis GEO limit)"}],
    "request_id": "5f0c6d0e-8d55-4a8e-a0a7-3f0f0e2f2b1c"
}))]
pub(crate) struct Problem {
    /// URI reference naming the problem type; its last segment is a stable machine-readable code.
    #[serde(rename = "type")]
    pub(crate) type_: String,
    /// Short human-readable summary of the problem type.
    pub(crate) title: String,
    /// HTTP status code.
    pub(crate) status: u16,
    /// Human-readable explanation of this occurrence.
    pub(crate) detail: String,
    /// The offending fields, for validation errors.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) errors: Vec<FieldError>,
    /// Seconds to wait before retrying (429 and 503 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) retry_after: Option<u64>,
    /// The request id of this request (also in the `x-request-id` header), for support.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) request_id: Option<String>,
}

/// Every error a handler can answer with. Each variant's doc names its status code.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// 400: the body is not syntactically valid JSON.
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// 415: the body is not `application/json`.
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    /// 413: the body (or a batch inside it) is larger than the configured limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 422: one or more fields are invalid; nothing was written.
    #[error("{}", FieldError::list(.0))]
    Validation(Vec<FieldError>),
    /// 422: the point lies outside every configured service area.
    #[error("the point ({lat}, {lon}) lies outside every service area")]
    OutsideServiceArea {
        /// Latitude of the rejected point.
        lat: f64,
        /// Longitude of the rejected point.
        lon: f64,
    },
    /// 401: no credentials, or unknown, revoked or expired ones.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the credentials do not allow this request; nothing was written.
    #[error("{0}")]
    Forbidden(String),
    /// 429: a rate limit was exceeded; retry after `retry_after` seconds.
    #[error("{detail}")]
    TooManyRequests {
        /// Human-readable explanation.
        detail: String,
        /// Seconds to wait.
        retry_after: u64,
    },
    /// 404: the named resource does not exist.
    #[error("{0}")]
    NotFound(String),
    /// 405: the route exists but not with this method (the response lists the allowed ones).
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 409: the request conflicts with the current state; `code` is the problem type's last segment.
    #[error("{detail}")]
    Conflict {
        /// Stable machine-readable code, e.g. `stale-position`.
        code: &'static str,
        /// Human-readable explanation.
        detail: String,
    },
    /// 503: a dependency (Redis) is not reachable right now.
    #[error("{0}")]
    Unavailable(String),
    /// 500: anything unexpected. Logged with its cause chain, never shown to the client.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    /// A validation error for a single field.
    pub(crate) fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Validation(vec![FieldError::new(field, message)])
    }

    /// The stable code that ends the problem `type` URI.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            ApiError::MalformedJson(_) => "malformed-json",
            ApiError::UnsupportedMediaType(_) => "unsupported-media-type",
            ApiError::PayloadTooLarge(_) => "payload-too-large",
            ApiError::Validation(_) => "validation-error",
            ApiError::OutsideServiceArea { .. } => "outside-service-area",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::TooManyRequests { .. } => "rate-limited",
            ApiError::NotFound(_) => "not-found",
            ApiError::MethodNotAllowed(_) => "method-not-allowed",
            ApiError::Conflict { code, .. } => code,
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal-error",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            ApiError::MalformedJson(_) => "Malformed JSON body",
            ApiError::UnsupportedMediaType(_) => "Unsupported media type",
            ApiError::PayloadTooLarge(_) => "Payload too large",
            ApiError::Validation(_) => "Request validation failed",
            ApiError::OutsideServiceArea { .. } => "Outside every service area",
            ApiError::Unauthorized(_) => "Authentication required",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::TooManyRequests { .. } => "Too many requests",
            ApiError::NotFound(_) => "Not found",
            ApiError::MethodNotAllowed(_) => "Method not allowed",
            ApiError::Conflict { .. } => "Conflict with the current state",
            ApiError::Unavailable(_) => "Service unavailable",
            ApiError::Internal(_) => "Internal server error",
        }
    }

    /// The problem body for this error (the request id is filled in by the response path).
    pub(crate) fn problem(&self) -> Problem {
        let detail = match self {
            ApiError::Internal(_) => {
                "an unexpected error occurred; it has been logged with this request's id".to_owned()
            }
            other => other.to_string(),
        };
        let errors = match self {
            ApiError::Validation(errors) => errors.clone(),
            ApiError::OutsideServiceArea { .. } => vec![
                FieldError::new("lat", "outside every service area"),
                FieldError::new("lon", "outside every service area"),
            ],
            _ => Vec::new(),
        };
        Problem {
            type_: format!("/problems/{}", self.code()),
            title: self.title().to_owned(),
            status: self.status_code().as_u16(),
            detail,
            errors,
            retry_after: match self {
                ApiError::Unavailable(_) => Some(1),
                ApiError::TooManyRequests { retry_after, .. } => Some(*retry_after),
                _ => None,
            },
            request_id: crate::http::telemetry::current_request_id(),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::MalformedJson(_) => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Validation(_) | ApiError::OutsideServiceArea { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Internal(err) = self {
            tracing::error!(error = format!("{err:#}"), "internal error");
        }
        let problem = self.problem();
        let mut response = HttpResponse::build(self.status_code());
        response.insert_header((header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON)));
        if let Some(secs) = problem.retry_after {
            response.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        response.body(serde_json::to_vec(&problem).unwrap_or_default())
    }
}

impl From<crate::store::ReplicationError> for ApiError {
    fn from(err: crate::store::ReplicationError) -> Self {
        match err {
            crate::store::ReplicationError::NotAcknowledged(detail) => {
                ApiError::Unavailable(detail)
            }
            crate::store::ReplicationError::Redis(err) => redis_error("WAIT")(err),
        }
    }
}

/// Convert a Redis error on a request path into an [`ApiError`]: connection-level failures are
/// 503 (Redis unreachable, retry later), everything else is an internal error with context.
pub(crate) fn redis_error(context: &'static str) -> impl FnOnce(redis::RedisError) -> ApiError {
    move |err| {
        // Also the answers of a Redis in the middle of a failover or a restart: a demoted
        // primary (READONLY), a replica without its primary, a node still loading its data,
        // a Cluster slot in migration or a Cluster without quorum.
        if err.is_connection_dropped()
            || err.is_connection_refusal()
            || err.is_timeout()
            || err.is_io_error()
            || matches!(
                err.code(),
                Some(
                    "READONLY"
                        | "MASTERDOWN"
                        | "LOADING"
                        | "TRYAGAIN"
                        | "CLUSTERDOWN"
                        | "NOREPLICAS"
                )
            )
        {
            tracing::warn!(error = %err, context, "redis unavailable");
            ApiError::Unavailable("the data store is unavailable; retry shortly".to_owned())
        } else {
            ApiError::Internal(anyhow::Error::new(err).context(context))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_never_leak_their_cause() {
        let err = ApiError::Internal(anyhow::anyhow!("secret connection string redis://pw@host"));
        let problem = err.problem();
        assert_eq!(problem.status, 500);
        assert!(!problem.detail.contains("secret"));
    }

    #[test]
    fn validation_errors_list_every_field() {
        let err = ApiError::Validation(vec![
            FieldError::new("lat", "too big"),
            FieldError::new("lon", "too small"),
        ]);
        let problem = err.problem();
        assert_eq!(problem.type_, "/problems/validation-error");
        assert_eq!(problem.errors.len(), 2);
        assert_eq!(problem.detail, "lat: too big; lon: too small");
    }
}
