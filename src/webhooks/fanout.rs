//! Fan-out: each city's event stream is read from a cursor kept in Redis, and every event is
//! queued, in stream order, on one lane of each enabled endpoint that wants its type (the lane
//! of its order, so an order's messages stay in order). Queuing and moving the cursor are one
//! script (`webhook_fanout.lua`) guarded by the cursor's previous value: every instance may
//! fan out every city, an event is queued once, and an instance that dies loses nothing.
//!
//! Fan-out reads the stream the transition scripts already write, so dispatch and ingest do
//! no webhook work at all. The stream is trimmed at about `events_maxlen` entries: events
//! trimmed before their fan-out (a backlog that long) are not sent. Fan-out notices it: the
//! event its cursor names is gone from the stream (trimming takes the oldest first, and the
//! newest entries are always kept, so a caught-up cursor never loses its event). It logs a
//! warning and counts `geodispatch_webhook_fanout_gaps_total`, then goes on from the oldest
//! event left.

use std::time::Duration;

use redis::streams::{StreamRangeReply, StreamReadReply};
use serde::Serialize;

use super::endpoints::Endpoint;
use super::scripts::{FanoutArgs, FanoutReply};
use super::{Webhooks, lane_member};
use crate::events::OrderEvent;
use crate::store::scripts;

/// Events read (and fanned out in one script) at once.
const BATCH: usize = 100;
/// How long a read waits for new events before the endpoints are looked at again.
const BLOCK_MS: u64 = 1_000;

/// One queued message, as stored in a lane.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub(crate) struct Message {
    /// The `webhook-id`: stable across attempts, for receivers to deduplicate.
    pub(crate) id: String,
    /// The event type (`order.accepted`).
    #[serde(rename = "type")]
    pub(crate) kind: String,
    /// The order (it picks the lane).
    pub(crate) order: String,
    /// The exact body sent (the event as the event stream shows it).
    pub(crate) payload: String,
}

/// The webhook id of the event with stream id `stream_id` in `city` (stream ids are per city).
pub(crate) fn webhook_id(city: &str, stream_id: &str) -> String {
    format!("evt_{city}_{stream_id}")
}

/// The message of one event.
pub(crate) fn message(event: &OrderEvent) -> Message {
    Message {
        id: webhook_id(&event.city, &event.id),
        kind: webhook_type(&event.kind),
        order: event.order_id.clone(),
        payload: serde_json::to_string(event).unwrap_or_default(),
    }
}

/// The webhook type of an event stream type: a driver's arrival events keep their name
/// (`driver.arrived_pickup`), an order transition gets `order.` (`order.accepted`).
pub(crate) fn webhook_type(kind: &str) -> String {
    if kind.starts_with("driver.") {
        kind.to_owned()
    } else {
        format!("order.{kind}")
    }
}

/// The lane of `order` among `lanes`.
pub(crate) fn lane_of(order: &str, lanes: u32) -> u32 {
    u32::from(crate::store::crc16(order.as_bytes())) % lanes.max(1)
}

impl Webhooks {
    /// The city's cursor, set to the newest event now when it has none (endpoints get the
    /// events after the first instance started, not the history).
    async fn cursor(&self, city: &str) -> redis::RedisResult<String> {
        let keys = self.store().keys();
        let mut conn = self.store().conn();
        if let Some(c) = redis::cmd("GET")
            .arg(keys.webhook_cursor(city))
            .query_async::<Option<String>>(&mut conn)
            .await?
        {
            return Ok(c);
        }
        let last: StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(keys.events(city))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await?;
        let start = last
            .ids
            .first()
            .map(|e| e.id.clone())
            .unwrap_or_else(|| "0-0".to_owned());
        let _: Option<String> = redis::cmd("SET")
            .arg(keys.webhook_cursor(city))
            .arg(&start)
            .arg("NX")
            .query_async(&mut conn)
            .await?;
        redis::cmd("GET")
            .arg(keys.webhook_cursor(city))
            .query_async::<Option<String>>(&mut conn)
            .await
            .map(Option::unwrap_or_default)
    }

    /// Queue `messages` (each with its endpoint and its lane count), behind the check that
    /// `city`'s cursor is still `cursor.0` (moving it to `cursor.1`), or unconditionally
    /// without a cursor (a manual re-send, an announcement).
    pub(crate) async fn enqueue(
        &self,
        cursor: Option<(&str, &str)>,
        city: &str,
        messages: &[(&Endpoint, u32, Message)],
    ) -> redis::RedisResult<FanoutReply> {
        let keys = self.store().keys();
        let mut k = vec![keys.webhook_cursor(city), keys.webhook_due()];
        let mut args = FanoutArgs {
            cursor: cursor.map(|(read, next)| (read.to_owned(), next.to_owned())),
            max_backlog: self.settings().webhook_max_backlog,
            messages: Vec::with_capacity(messages.len()),
        };
        for (endpoint, lanes, message) in messages {
            let lane = lane_of(&message.order, *lanes);
            k.extend(keys.webhook_fanout_target(&endpoint.id, lane));
            args.messages.push((
                lane_member(&endpoint.id, lane),
                serde_json::to_string(message).unwrap_or_default(),
            ));
        }
        let cmd = scripts::evalsha(&scripts::WEBHOOK_FANOUT, &k, &args.argv());
        let reply = FanoutReply::decode(
            scripts::run(&mut self.store().conn(), &scripts::WEBHOOK_FANOUT, &cmd).await?,
        )?;
        if reply.dropped > 0 {
            crate::metrics::add(
                "geodispatch_webhook_dropped_total",
                &[],
                reply.dropped as f64,
            );
            tracing::warn!(
                city,
                dropped = reply.dropped,
                "webhook backlog full: events dropped"
            );
        }
        Ok(reply)
    }

    /// Fan out one batch of `city`'s events after the cursor; `false` when there was none.
    async fn fan_out_once(
        &self,
        conn: &mut crate::store::PooledConn,
        city: &str,
    ) -> redis::RedisResult<bool> {
        let cursor = self.cursor(city).await?;
        let read: Option<StreamReadReply> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(BATCH)
            .arg("BLOCK")
            .arg(BLOCK_MS)
            .arg("STREAMS")
            .arg(self.store().keys().events(city))
            .arg(&cursor)
            .query_async(conn)
            .await?;
        let Some(reply) = read else {
            return Ok(false);
        };
        let events: Vec<OrderEvent> = reply
            .keys
            .iter()
            .flat_map(|k| k.ids.iter())
            .map(|e| OrderEvent::from_entry(city, e))
            .collect();
        let Some(last) = events.last() else {
            return Ok(false);
        };
        // New events came: if the one the cursor names is gone, trimming passed the cursor.
        if cursor != "0-0" {
            let at_cursor: StreamRangeReply = redis::cmd("XRANGE")
                .arg(self.store().keys().events(city))
                .arg(&cursor)
                .arg(&cursor)
                .query_async(conn)
                .await?;
            if at_cursor.ids.is_empty() {
                crate::metrics::add("geodispatch_webhook_fanout_gaps_total", &[], 1.0);
                tracing::warn!(
                    city,
                    cursor,
                    "webhook fan-out fell behind the event stream's trimming: the events after its cursor that were trimmed were not sent"
                );
            }
        }
        let endpoints: Vec<(Endpoint, u32)> = self
            .all()
            .await
            .map_err(|e| match e {
                super::WebhookError::Redis { source, .. } => source,
                other => redis::RedisError::from((
                    redis::ErrorKind::Client,
                    "webhook endpoints",
                    other.to_string(),
                )),
            })?
            .into_iter()
            .filter(|(e, _)| e.enabled)
            .collect();
        let mut messages = Vec::new();
        for event in &events {
            let message = message(event);
            for (endpoint, lanes) in &endpoints {
                if endpoint.wants(&message.kind) {
                    messages.push((endpoint, *lanes, message.clone()));
                }
            }
        }
        let reply = self
            .enqueue(Some((&cursor, &last.id)), city, &messages)
            .await?;
        if reply.moved && reply.queued > 0 {
            tracing::debug!(city, queued = reply.queued, "webhook messages queued");
        }
        Ok(true)
    }

    /// Fan out `city`'s events for as long as the service runs.
    pub(crate) async fn run_fan_out(self, city: String) {
        loop {
            let mut conn = match self.store().pool().get().await {
                Ok(c) => c,
                Err(err) => {
                    tracing::warn!(city, error = %err, "webhook fan-out has no Redis connection; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            loop {
                if let Err(err) = self.fan_out_once(&mut conn, &city).await {
                    tracing::warn!(city, error = %err, "webhook fan-out failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    break;
                }
            }
        }
    }
}
