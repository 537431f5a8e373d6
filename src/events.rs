//! Order events: every transition script appends one entry to its city's stream
//! (`{prefix}:{city}:events`, trimmed with `MAXLEN ~ events_maxlen`) and publishes it on
//! Pub/Sub (`{prefix}:events:<city>` for ops, `{prefix}:driver:<id>` for a driver's offers) in
//! the same atomic step. `follow` reads a city's stream as it grows, resumable from any
//! retained id (`GET /v1/events?city=` serves it as Server-Sent Events). Because the stream is
//! written inside the scripts, it is the exact order of the transitions, and
//! [`check_invariants`] can replay it to prove that no order went to two drivers and no driver
//! held two orders.

use std::collections::{HashMap, HashSet};

use redis::streams::{StreamId, StreamRangeReply, StreamReadReply};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::cities::CityIndex;
use crate::store::Store;

/// One order event, as stored in the stream and sent over SSE and Pub/Sub.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"id": "1795458600310-0", "type": "offered", "order_id": "ord-1001", "driver_id": "drv-1", "state": "offered", "fencing_token": 42, "at_ms": 1795458600310_i64, "city": "paris"}))]
pub struct OrderEvent {
    /// Stream entry id (also the SSE `id`, for `Last-Event-ID`).
    pub id: String,
    /// `created`, `offered`, `accepted`, `rejected`, `expired`, `picked_up`, `delivered`,
    /// `cancelled` or `failed` (order transitions), `driver.arrived_pickup`,
    /// `driver.arrived_dropoff` or `driver.left_pickup` (the order's driver came to or left
    /// its pickup or drop-off; the state is the order's, unchanged), or `driver.reposition`
    /// (an idle driver is asked to move to `lat`, `lon`, a pickup spot with recent demand; no
    /// order, state `available`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Order id.
    pub order_id: String,
    /// The driver concerned (empty when none).
    pub driver_id: String,
    /// The order's state after the event.
    pub(crate) state: String,
    /// The fencing number of the offer concerned (0 when none).
    pub fencing_token: u64,
    /// Redis time of the transition, epoch ms.
    pub at_ms: i64,
    /// City.
    pub(crate) city: String,
    /// `driver.reposition`: latitude of the spot the driver is asked to move to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lat: Option<f64>,
    /// `driver.reposition`: longitude of that spot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lon: Option<f64>,
}

impl OrderEvent {
    pub(crate) fn from_entry(city: &str, e: &StreamId) -> Self {
        let s = |k: &str| e.get::<String>(k).unwrap_or_default();
        OrderEvent {
            id: e.id.clone(),
            kind: s("type"),
            order_id: s("order"),
            driver_id: s("driver"),
            state: s("state"),
            fencing_token: s("fence").parse().unwrap_or(0),
            at_ms: s("at").parse().unwrap_or(0),
            city: city.to_owned(),
            lat: e.get::<String>("lat").and_then(|v| v.parse().ok()),
            lon: e.get::<String>("lon").and_then(|v| v.parse().ok()),
        }
    }
}

/// Read a city's whole retained event history, oldest first (tests, simulator, audits).
pub async fn read_history(store: &Store, city: &str) -> redis::RedisResult<Vec<OrderEvent>> {
    let key = store.keys().events(city);
    let mut conn = store.conn();
    let mut out = Vec::new();
    let mut start = "-".to_owned();
    loop {
        let page: StreamRangeReply = redis::cmd("XRANGE")
            .arg(&key)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        let n = page.ids.len();
        if let Some(last) = page.ids.last() {
            start = format!("({}", last.id);
        }
        out.extend(page.ids.iter().map(|e| OrderEvent::from_entry(city, e)));
        if n < 1000 {
            return Ok(out);
        }
    }
}

/// What replaying an event history found.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct InvariantReport {
    /// Events replayed.
    pub events: usize,
    /// Orders seen.
    pub orders: usize,
    /// Orders in each terminal state.
    pub terminal: HashMap<String, usize>,
    /// I1: an order offered while another driver still had it.
    pub double_assignments: usize,
    /// I2: a driver offered an order while it held another.
    pub driver_double_orders: usize,
    /// I3: orders with more than one terminal event, or events after their terminal one.
    pub after_terminal: usize,
    /// I4: an order offered with a fencing number not above its previous offer's.
    pub fence_regressions: usize,
    /// Human-readable description of each violation (first 50).
    pub violations: Vec<String>,
}

impl InvariantReport {
    /// Whether no invariant was violated.
    pub fn ok(&self) -> bool {
        self.double_assignments == 0
            && self.driver_double_orders == 0
            && self.after_terminal == 0
            && self.fence_regressions == 0
    }

    fn violation(&mut self, text: String) {
        if self.violations.len() < 50 {
            self.violations.push(text);
        }
    }
}

/// Replay an event history (one city, stream order) and check the four dispatch invariants
/// (I1–I4 of [`InvariantReport`]).
pub fn check_invariants(events: &[OrderEvent]) -> InvariantReport {
    let mut report = InvariantReport {
        events: events.len(),
        ..Default::default()
    };
    let mut holder: HashMap<&str, &str> = HashMap::new();
    let mut active: HashMap<&str, &str> = HashMap::new();
    let mut last_fence: HashMap<&str, u64> = HashMap::new();
    let mut finished: HashSet<&str> = HashSet::new();
    let mut orders: HashSet<&str> = HashSet::new();
    for e in events {
        let order = e.order_id.as_str();
        // Driver events without an order (`driver.reposition`) concern no invariant.
        if order.is_empty() {
            continue;
        }
        orders.insert(order);
        if finished.contains(order) {
            report.after_terminal += 1;
            report.violation(format!("{}: {} after the order ended", e.id, e.kind));
        }
        match e.kind.as_str() {
            "offered" => {
                if let Some(other) = holder.get(order) {
                    report.double_assignments += 1;
                    report.violation(format!(
                        "{}: order {order} offered to {} while {other} held it",
                        e.id, e.driver_id
                    ));
                }
                if let Some(other) = active.get(e.driver_id.as_str()) {
                    report.driver_double_orders += 1;
                    report.violation(format!(
                        "{}: driver {} offered {order} while holding {other}",
                        e.id, e.driver_id
                    ));
                }
                if let Some(&prev) = last_fence.get(order)
                    && e.fencing_token <= prev
                {
                    report.fence_regressions += 1;
                    report.violation(format!(
                        "{}: order {order} offered with fence {} after {prev}",
                        e.id, e.fencing_token
                    ));
                }
                last_fence.insert(order, e.fencing_token);
                holder.insert(order, &e.driver_id);
                active.insert(&e.driver_id, order);
            }
            "rejected" | "expired" | "delivered" | "cancelled" | "failed" => {
                if let Some(driver) = holder.remove(order)
                    && active.get(driver) == Some(&order)
                {
                    active.remove(driver);
                }
            }
            _ => {}
        }
        if matches!(e.kind.as_str(), "delivered" | "cancelled" | "failed") {
            finished.insert(order);
            *report.terminal.entry(e.kind.clone()).or_default() += 1;
        }
    }
    report.orders = orders.len();
    report
}

/// Why following a city's events could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EventsError {
    /// No city has this id.
    #[error("city {0} does not exist")]
    CityNotFound(String),
    /// The position to resume from is not a stream id.
    #[error("not a stream id: {0:?}")]
    InvalidEventId(String),
    /// No dedicated Redis connection could be checked out of the pool.
    #[error("no Redis connection for an event stream")]
    NoConnection(#[source] anyhow::Error),
    /// A Redis command failed; `context` names the step.
    #[error("Redis failed: {context}")]
    Redis {
        /// The step that failed.
        context: &'static str,
        /// Redis' error.
        #[source]
        source: redis::RedisError,
    },
}

/// The id of the city named `name`.
pub(crate) fn city_id(cities: &CityIndex, name: &str) -> Result<String, EventsError> {
    cities
        .get(name)
        .map(|city| city.id.to_string())
        .ok_or_else(|| EventsError::CityNotFound(name.to_owned()))
}

/// Where a follower starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Resume {
    /// With the events appended from now on.
    New,
    /// Right after this stream id (`0` replays every retained event).
    After(String),
}

impl Resume {
    /// Resume after `last_event_id` when given (it must be a stream id), else from now on.
    pub(crate) fn parse(last_event_id: Option<String>) -> Result<Self, EventsError> {
        match last_event_id {
            Some(id) if valid_stream_id(&id) => Ok(Resume::After(id)),
            Some(id) => Err(EventsError::InvalidEventId(id)),
            None => Ok(Resume::New),
        }
    }
}

fn valid_stream_id(id: &str) -> bool {
    let mut parts = id.splitn(2, '-');
    let ms = parts.next().unwrap_or("");
    let seq = parts.next();
    !ms.is_empty()
        && ms.bytes().all(|b| b.is_ascii_digit())
        && seq.is_none_or(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        && id.len() <= 41
}

/// Silence after which a follower is told that nothing happened; a client that left is
/// noticed at the latest then, and its stream slot freed.
pub(crate) const KEEP_ALIVE_MS: u64 = 5_000;

/// What following a city's events yields, read after read.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Feed {
    /// The events appended since the previous item, oldest first.
    Events(Vec<OrderEvent>),
    /// Nothing was appended for [`KEEP_ALIVE_MS`].
    Idle,
}

/// Follow `city`'s events from `from`, on a dedicated connection (each read blocks). The
/// stream ends when a read fails (logged); the client reconnects with the last id it saw.
pub(crate) async fn follow(
    store: &Store,
    city: String,
    from: Resume,
) -> Result<impl futures_util::Stream<Item = Feed> + use<>, EventsError> {
    let mut conn = store.pool().get().await.map_err(|e| {
        tracing::warn!(error = %e, "no Redis connection for an event stream");
        EventsError::NoConnection(e)
    })?;
    let key = store.keys().events(&city);
    // "New events only" means after the last one now: resolve it once, or every blocking read
    // after a keep-alive would skip what was appended between two reads.
    let start = match from {
        Resume::After(id) => id,
        Resume::New => {
            let last: StreamRangeReply = redis::cmd("XREVRANGE")
                .arg(&key)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .query_async(&mut conn)
                .await
                .map_err(|source| EventsError::Redis {
                    context: "event stream",
                    source,
                })?;
            last.ids
                .first()
                .map(|e| e.id.clone())
                .unwrap_or_else(|| "0-0".to_owned())
        }
    };
    Ok(futures_util::stream::unfold(
        (conn, start, key, city),
        |(mut conn, mut last, key, city)| async move {
            let read: redis::RedisResult<Option<StreamReadReply>> = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(100)
                .arg("BLOCK")
                .arg(KEEP_ALIVE_MS)
                .arg("STREAMS")
                .arg(&key)
                .arg(&last)
                .query_async(&mut conn)
                .await;
            let item = match read {
                Ok(Some(reply)) => {
                    let events: Vec<OrderEvent> = reply
                        .keys
                        .iter()
                        .flat_map(|k| k.ids.iter())
                        .map(|entry| OrderEvent::from_entry(&city, entry))
                        .collect();
                    if let Some(newest) = events.last() {
                        last = newest.id.clone();
                    }
                    Feed::Events(events)
                }
                Ok(None) => Feed::Idle,
                Err(err) => {
                    tracing::warn!(error = %err, "event stream read failed; closing the SSE stream");
                    return None;
                }
            };
            Some((item, (conn, last, key, city)))
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: u32, kind: &str, order: &str, driver: &str, fence: u64) -> OrderEvent {
        OrderEvent {
            id: format!("{id}-0"),
            kind: kind.to_owned(),
            order_id: order.to_owned(),
            driver_id: driver.to_owned(),
            state: String::new(),
            fencing_token: fence,
            at_ms: 0,
            city: "paris".to_owned(),
            lat: None,
            lon: None,
        }
    }

    #[test]
    fn a_clean_history_passes() {
        let h = [
            ev(1, "created", "o1", "", 0),
            ev(2, "offered", "o1", "d1", 1),
            ev(3, "rejected", "o1", "d1", 1),
            ev(4, "offered", "o1", "d2", 3),
            ev(5, "accepted", "o1", "d2", 3),
            ev(6, "offered", "o2", "d1", 2),
            ev(7, "delivered", "o1", "d2", 3),
        ];
        let r = check_invariants(&h);
        assert!(r.ok(), "{r:?}");
        assert_eq!(r.terminal.get("delivered"), Some(&1));
    }

    #[test]
    fn every_violation_kind_is_caught() {
        let h = [
            ev(1, "offered", "o1", "d1", 5),
            ev(2, "offered", "o1", "d2", 6),
            ev(3, "offered", "o2", "d1", 7),
            ev(4, "rejected", "o2", "d1", 7),
            ev(5, "offered", "o2", "d3", 7),
            ev(6, "cancelled", "o3", "", 0),
            ev(7, "cancelled", "o3", "", 0),
        ];
        let r = check_invariants(&h);
        assert_eq!(r.double_assignments, 1);
        assert_eq!(r.driver_double_orders, 1);
        assert_eq!(r.fence_regressions, 1);
        assert_eq!(r.after_terminal, 1);
        assert!(!r.ok());
    }

    #[test]
    fn stream_ids_are_checked() {
        for ok in ["0", "0-0", "1795458600310-12"] {
            assert!(valid_stream_id(ok), "{ok}");
        }
        for bad in ["", "-", "abc", "1-", "1-2-3", "$", ">"] {
            assert!(!valid_stream_id(bad), "{bad}");
        }
    }

    #[test]
    fn a_follower_resumes_after_a_valid_id_or_from_now_on() {
        assert_eq!(Resume::parse(None).unwrap(), Resume::New);
        assert_eq!(
            Resume::parse(Some("0".to_owned())).unwrap(),
            Resume::After("0".to_owned())
        );
        assert!(matches!(
            Resume::parse(Some("$".to_owned())),
            Err(EventsError::InvalidEventId(id)) if id == "$"
        ));
    }
}
