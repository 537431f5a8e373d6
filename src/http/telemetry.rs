//! Logging setup and the request-id middleware.
//!
//! Every request gets an id (the caller's `x-request-id` when it is sane, else a new UUID). The id
//! is echoed in the `x-request-id` response header, carried by a `tracing` span around the whole
//! request (so every log line of the request names it) and put into problem+json bodies.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use tracing::Instrument;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Header that carries the request id in and out.
pub(crate) const REQUEST_ID_HEADER: &str = "x-request-id";

tokio::task_local! {
    static REQUEST_ID: String;
}

/// Install the global `tracing` subscriber: human-readable text or one JSON object per line.
/// The filter comes from `RUST_LOG` (default `info`). Safe to call more than once.
pub fn init(format: LogFormat) {
    init_with_default(format, "info");
}

/// Like [`init`], with `default` as the filter when `RUST_LOG` is unset.
pub fn init_with_default(format: LogFormat, default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// The id of the request being served by the current task, if any.
pub(crate) fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

fn sane_request_id(value: &HeaderValue) -> Option<String> {
    let s = value.to_str().ok()?;
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    ok.then(|| s.to_owned())
}

/// Middleware: assign the request id, open the request span, log the outcome with its latency.
pub(crate) async fn request_id_middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody + 'static>, actix_web::Error> {
    let id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(sane_request_id)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %req.path(),
    );
    let started = Instant::now();
    let header = HeaderValue::from_str(&id).expect("request ids are ASCII");
    let fut = REQUEST_ID.scope(id, next.call(req));
    let mut res = fut.instrument(span.clone()).await?;
    let status = res.status().as_u16();
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = res.request().method().to_string();
    let elapsed = started.elapsed().as_secs_f64();
    crate::metrics::inc(
        "geodispatch_http_requests_total",
        &[
            ("method", &method),
            ("route", &route),
            ("status", &status.to_string()),
        ],
    );
    crate::metrics::observe(
        "geodispatch_http_request_duration_seconds",
        &[("method", &method), ("route", &route)],
        elapsed,
    );
    res.headers_mut()
        .insert(HeaderName::from_static(REQUEST_ID_HEADER), header);
    span.in_scope(|| {
        let elapsed_us = started.elapsed().as_micros() as u64;
        if status >= 500 {
            tracing::warn!(status, elapsed_us, "request finished");
        } else {
            tracing::debug!(status, elapsed_us, "request finished");
        }
    });
    Ok(res)
}
