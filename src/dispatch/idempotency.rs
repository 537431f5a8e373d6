//! Safe retries of order creation. The first request with an idempotency key reserves it
//! (`SET NX PX`) with its body and order id; once the order is created and replicated, the
//! answer is recorded under the key. A repeat with the same body is answered with the recorded
//! answer, or, when the first request never answered (it failed or is still running), completes
//! that request with the same order id. Another body with the same key is refused.

use serde::{Deserialize, Serialize};

use super::error::DispatchError;
use super::model::Order;
use crate::domain::OrderId;
use crate::store::Store;

/// What an idempotency key remembers: the request it was first used with and, once known,
/// the answer given.
#[derive(Debug, Serialize, Deserialize)]
struct IdempotencyRecord {
    body: String,
    order_id: String,
    #[serde(default)]
    response: Option<serde_json::Value>,
}

/// What reserving a key found.
#[derive(Debug)]
pub(super) enum Reservation {
    /// The key is new: this request creates the order.
    First,
    /// The same request was answered before: answer it again, as recorded.
    Answered(serde_json::Value),
    /// The same request came before but has not answered: complete it, with its order id.
    Unfinished(OrderId),
}

/// One request's use of an idempotency key: the stored key and the request's canonical body.
pub(super) struct Idempotency {
    key: String,
    body: String,
}

impl Idempotency {
    /// The idempotency record of the client's `client_key` for a request with `body` (its
    /// canonical JSON, which is what a repeat is compared with).
    pub(super) fn new(store: &Store, client_key: &str, body: String) -> Self {
        Self {
            key: store.keys().idempotency(client_key),
            body,
        }
    }

    /// Reserve the key for a request creating `order`, kept for `ttl_ms`; or find what the
    /// first request with this key left.
    pub(super) async fn reserve(
        &self,
        store: &Store,
        ttl_ms: u64,
        order: &OrderId,
    ) -> Result<Reservation, DispatchError> {
        let record = IdempotencyRecord {
            body: self.body.clone(),
            order_id: order.to_string(),
            response: None,
        };
        // SET NX and GET in one round trip: the GET sees either this reservation or the first.
        let (set, existing): (Option<String>, String) = redis::pipe()
            .cmd("SET")
            .arg(&self.key)
            .arg(serde_json::to_string(&record).map_err(anyhow::Error::from)?)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms)
            .cmd("GET")
            .arg(&self.key)
            .query_async(&mut store.conn())
            .await
            .map_err(DispatchError::redis("idempotency key"))?;
        if set.is_some() {
            return Ok(Reservation::First);
        }
        let first: IdempotencyRecord = serde_json::from_str(&existing)
            .map_err(|e| anyhow::anyhow!("undecodable idempotency record: {e}"))?;
        if first.body != self.body {
            return Err(DispatchError::IdempotencyKeyReused);
        }
        if let Some(response) = first.response {
            return Ok(Reservation::Answered(response));
        }
        let order = OrderId::parse(&first.order_id)
            .map_err(|e| anyhow::anyhow!("bad order id in idempotency record: {e}"))?;
        Ok(Reservation::Unfinished(order))
    }

    /// Record the answer to the request (the created `order`, with id `id`), keeping the
    /// reservation's time to live.
    pub(super) async fn record(
        &self,
        store: &Store,
        id: &OrderId,
        order: &Order,
    ) -> Result<(), DispatchError> {
        let record = IdempotencyRecord {
            body: self.body.clone(),
            order_id: id.to_string(),
            response: Some(serde_json::to_value(order).map_err(anyhow::Error::from)?),
        };
        let () = redis::cmd("SET")
            .arg(&self.key)
            .arg(serde_json::to_string(&record).map_err(anyhow::Error::from)?)
            .arg("XX")
            .arg("KEEPTTL")
            .query_async(&mut store.conn())
            .await
            .map_err(DispatchError::redis("idempotency key"))?;
        Ok(())
    }
}
