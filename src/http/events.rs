//! `GET /v1/events`: a city's order events as Server-Sent Events. The events capability
//! ([`crate::events`]) reads the stream; this handler checks the query, bounds the open
//! streams per key and writes each event as an SSE frame.

use actix_web::{HttpRequest, HttpResponse, get, web};
use futures_util::StreamExt;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::cities::CityIndex;
use crate::events::{EventsError, Feed, OrderEvent, Resume};
use crate::http::error::{ApiError, Problem, redis_error};
use crate::http::extract::QueryParams;
use crate::store::Store;

/// Query of `GET /v1/events`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventsQuery {
    /// City whose events to follow.
    #[param(example = "paris")]
    pub(crate) city: String,
    /// Resume after this event id (same as the `Last-Event-ID` header, which wins); `0` replays
    /// every retained event. Without either, only new events are sent.
    pub(crate) last_event_id: Option<String>,
}

/// Follow a city's order events as Server-Sent Events.
///
/// Each event carries `id` (the stream id), `event` (its type) and `data` (an
/// [`OrderEvent`] as JSON). Reconnecting with `Last-Event-ID` resumes right after that event,
/// as long as the stream still retains it (`events_maxlen`). A comment line is sent every 5 s
/// of silence to keep proxies from closing the connection.
#[utoipa::path(
    tag = "events",
    params(EventsQuery, ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id")),
    responses(
        (status = 200, description = "An endless `text/event-stream` of order events", content_type = "text/event-stream", body = OrderEvent),
        (status = 404, description = "No such city", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid query or event id", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Redis unavailable", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[get("/events")]
pub(crate) async fn stream_events(
    req: HttpRequest,
    query: QueryParams<EventsQuery>,
    store: web::Data<Store>,
    cities: web::Data<CityIndex>,
) -> Result<HttpResponse, ApiError> {
    let q = query.0;
    let city = crate::events::city_id(&cities, &q.city)?;
    let header_id = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let from = Resume::parse(header_id.or(q.last_event_id))?;
    // Bounded per key (in this instance); the slot is freed when the stream is dropped.
    let slot = match (
        crate::http::auth::principal(&req)
            .map(|p| p.key_id)
            .unwrap_or_else(|| "anonymous".to_owned()),
        req.app_data::<web::Data<crate::http::auth::Guard>>(),
    ) {
        (key_id, Some(guard)) => Some(
            guard
                .streams
                .acquire(&key_id, guard.settings.sse_max_per_key)
                .ok_or_else(|| ApiError::TooManyRequests {
                    detail: format!(
                        "at most {} open event streams per key and {} per instance",
                        guard.settings.sse_max_per_key,
                        crate::auth::MAX_STREAMS
                    ),
                    retry_after: 5,
                })?,
        ),
        _ => None,
    };
    let feed = crate::events::follow(&store, city, from).await?;
    let frames = feed.map(move |item| {
        // The slot lives as long as the stream.
        let _open = &slot;
        let chunk = match item {
            Feed::Events(events) => events.iter().map(sse_frame).collect::<String>(),
            Feed::Idle => ": keep-alive\n\n".to_owned(),
        };
        Ok::<_, actix_web::Error>(web::Bytes::from(chunk))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(frames))
}

fn sse_frame(event: &OrderEvent) -> String {
    format!(
        "id: {}\nevent: {}\ndata: {}\n\n",
        event.id,
        event.kind,
        serde_json::to_string(event).unwrap_or_default()
    )
}

/// Register the events route under `/v1`.
pub(crate) fn configure(cfg: &mut ServiceConfig) {
    cfg.service(stream_events);
}

/// How each events failure is answered.
impl From<EventsError> for ApiError {
    fn from(err: EventsError) -> Self {
        match err {
            err @ EventsError::CityNotFound(_) => ApiError::NotFound(err.to_string()),
            EventsError::InvalidEventId(_) => {
                ApiError::field("Last-Event-ID", "must be a stream id like 1795458600310-0")
            }
            EventsError::NoConnection(_) => {
                ApiError::Unavailable("the data store is unavailable; retry shortly".to_owned())
            }
            EventsError::Redis { context, source } => redis_error(context)(source),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_one_frame_with_its_id_type_and_json() {
        let event = OrderEvent {
            id: "17-0".to_owned(),
            kind: "offered".to_owned(),
            order_id: "o-1".to_owned(),
            driver_id: "d-1".to_owned(),
            state: "offered".to_owned(),
            fencing_token: 3,
            at_ms: 17,
            city: "paris".to_owned(),
            lat: None,
            lon: None,
        };
        assert_eq!(
            sse_frame(&event),
            "id: 17-0\nevent: offered\ndata: {\"id\":\"17-0\",\"type\":\"offered\",\"order_id\":\"o-1\",\"driver_id\":\"d-1\",\"state\":\"offered\",\"fencing_token\":3,\"at_ms\":17,\"city\":\"paris\"}\n\n"
        );
    }

    #[test]
    fn an_unknown_city_is_404_and_a_bad_event_id_422_on_the_header() {
        let p = ApiError::from(EventsError::CityNotFound("atlantis".to_owned())).problem();
        assert_eq!(
            (p.status, p.detail.as_str()),
            (404, "city atlantis does not exist")
        );
        let p = ApiError::from(EventsError::InvalidEventId("$".to_owned())).problem();
        assert_eq!(p.status, 422);
        assert_eq!(p.errors[0].field, "Last-Event-ID");
        let p =
            ApiError::from(EventsError::NoConnection(anyhow::anyhow!("pool timeout"))).problem();
        assert_eq!(p.status, 503);
    }
}
