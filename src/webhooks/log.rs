//! An endpoint's delivery log: its recent attempts (the stream `webhook_settle.lua` and
//! `webhook_fanout.lua` append to, trimmed to about 1000), and the manual re-send of one
//! message from it.

use redis::streams::StreamRangeReply;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::fanout::Message;
use super::{WebhookError, Webhooks};

/// Most attempts one listing returns (the log keeps about this many).
pub(crate) const MAX_LIST: usize = 1000;

/// One attempt to deliver a message (or its drop when the backlog was full).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"attempt_id": "1795458600410-0", "delivery_id": "evt_paris_1795458600310-0", "type": "order.accepted", "order_id": "ord-1001", "attempt": 2, "outcome": "retry", "status_code": 503, "latency_ms": 84, "next_retry_at": "2026-11-24T10:00:05.310Z", "error": "HTTP 503", "at": "2026-11-24T10:00:00.410Z"}))]
pub(crate) struct DeliveryAttempt {
    /// Id of this attempt in the log.
    pub(crate) attempt_id: String,
    /// The message's `webhook-id` (what `…/deliveries/{delivery_id}/retry` takes).
    pub(crate) delivery_id: String,
    /// Event type.
    #[serde(rename = "type")]
    pub(crate) kind: String,
    /// The order of the event.
    pub(crate) order_id: String,
    /// Attempt number (1 for the first; 0 for a drop).
    pub(crate) attempt: u32,
    /// `delivered`, `retry` (again at `next_retry_at`), `dead` (given up), `gone` (410: given
    /// up and the endpoint disabled) or `dropped` (the backlog was full).
    pub(crate) outcome: String,
    /// HTTP status of the answer (absent when there was none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) status_code: Option<u16>,
    /// Time from sending to the end of the answer or the failure.
    pub(crate) latency_ms: u64,
    /// When the next attempt is due (retries only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) next_retry_at: Option<String>,
    /// What went wrong (empty when delivered).
    pub(crate) error: String,
    /// When the attempt ended.
    pub(crate) at: String,
}

/// `GET /v1/admin/webhooks/{webhook_id}/deliveries` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct DeliveryList {
    /// Recent attempts, newest first.
    pub(crate) deliveries: Vec<DeliveryAttempt>,
}

/// `POST …/deliveries/{delivery_id}/retry` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"delivery_id": "evt_paris_1795458600310-0", "queued": true}))]
pub(crate) struct RetryQueued {
    /// The message queued again.
    pub(crate) delivery_id: String,
    /// Always `true`: it is sent after the messages already waiting in its lane (a disabled
    /// endpoint's lanes wait until it is enabled).
    pub(crate) queued: bool,
}

fn field(e: &redis::streams::StreamId, k: &str) -> String {
    e.get::<String>(k).unwrap_or_default()
}

impl Webhooks {
    /// Endpoint `id`'s recent attempts, newest first, at most `limit`.
    pub(crate) async fn deliveries(
        &self,
        id: &str,
        limit: usize,
    ) -> Result<DeliveryList, WebhookError> {
        self.get(id).await?;
        let page: StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(self.store().keys().webhook_log(id))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(limit.clamp(1, MAX_LIST))
            .query_async(&mut self.store().conn())
            .await
            .map_err(WebhookError::redis("reading a webhook log"))?;
        let deliveries = page
            .ids
            .iter()
            .map(|e| {
                let num = |k: &str| field(e, k).parse::<i64>().unwrap_or(0);
                DeliveryAttempt {
                    attempt_id: e.id.clone(),
                    delivery_id: field(e, "id"),
                    kind: field(e, "type"),
                    order_id: field(e, "order"),
                    attempt: num("attempt") as u32,
                    outcome: field(e, "outcome"),
                    status_code: Some(num("code") as u16).filter(|c| *c > 0),
                    latency_ms: num("latency_ms") as u64,
                    next_retry_at: Some(num("next_ms"))
                        .filter(|ms| *ms > 0)
                        .map(crate::domain::rfc3339_ms),
                    error: field(e, "error"),
                    at: crate::domain::rfc3339_ms(num("at")),
                }
            })
            .collect();
        Ok(DeliveryList { deliveries })
    }

    /// Queue message `delivery_id` of endpoint `id` again (found in its log).
    pub(crate) async fn retry(
        &self,
        id: &str,
        delivery_id: &str,
    ) -> Result<RetryQueued, WebhookError> {
        let (endpoint, hash) = {
            let h = self.endpoint_hash(id).await?;
            let e = super::endpoints::Endpoint::from_hash(id, &h)
                .ok_or_else(|| WebhookError::NotFound(id.to_owned()))?;
            (e, h)
        };
        let page: StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(self.store().keys().webhook_log(id))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(MAX_LIST * 2)
            .query_async(&mut self.store().conn())
            .await
            .map_err(WebhookError::redis("reading a webhook log"))?;
        let entry = page
            .ids
            .iter()
            .find(|e| field(e, "id") == delivery_id)
            .ok_or_else(|| WebhookError::NotFound(delivery_id.to_owned()))?;
        let message = Message {
            id: delivery_id.to_owned(),
            kind: field(entry, "type"),
            order: field(entry, "order"),
            payload: field(entry, "payload"),
        };
        let lanes = super::endpoints::lanes_in(&hash);
        let reply = self
            .enqueue(None, "", &[(&endpoint, lanes, message)])
            .await
            .map_err(WebhookError::redis("queuing a webhook message again"))?;
        if reply.queued == 0 {
            return Err(WebhookError::BacklogFull(id.to_owned()));
        }
        tracing::info!(webhook = %id, delivery = %delivery_id, "webhook message queued again by an administrator");
        Ok(RetryQueued {
            delivery_id: delivery_id.to_owned(),
            queued: true,
        })
    }
}
