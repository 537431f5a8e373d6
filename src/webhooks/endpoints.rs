//! Webhook endpoints: creation (the secret shown once), listing, changes and deletion. Each
//! endpoint is one hash, indexed in a set; creation and deletion are one MULTI each, a change
//! one script (`webhook_patch.lua`), so no half-written endpoint is ever visible.

use std::collections::HashMap;

use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::signing::{derive_secret, secret_text};
use super::{EVENT_TYPES, WebhookError, Webhooks};
use crate::domain::FieldError;
use crate::store::scripts;

/// Longest description.
const MAX_DESCRIPTION: usize = 200;
/// Most event types one endpoint lists.
const MAX_EVENTS: usize = 32;

/// `POST /v1/admin/webhooks` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"url": "https://hooks.example.com/geodispatch", "events": ["order.accepted", "order.delivered"], "description": "ops dashboard"}))]
pub(crate) struct NewEndpoint {
    /// Where to POST the events: `https` (unless `webhook_allow_http`), no credentials, a
    /// host that resolves to public addresses only (unless `webhook_allow_private`).
    #[schema(max_length = 2048, format = "uri")]
    pub(crate) url: String,
    /// The event types to send (`order.created`, `order.offered`, `order.accepted`,
    /// `order.rejected`, `order.expired`, `order.picked_up`, `order.delivered`,
    /// `order.cancelled`, `order.failed`, `driver.arrived_pickup`, `driver.arrived_dropoff`,
    /// `driver.left_pickup`, `endpoint.disabled`), or `*` for all.
    #[schema(min_items = 1, max_items = 32, example = json!(["*"]))]
    pub(crate) events: Vec<String>,
    /// Free-form label.
    #[serde(default)]
    #[schema(max_length = 200)]
    pub(crate) description: Option<String>,
}

/// `PATCH /v1/admin/webhooks/{webhook_id}` body: the fields to change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"enabled": true}))]
pub(crate) struct EndpointPatch {
    /// Enable (also resetting its run of failures and resuming its backlog) or disable it.
    #[serde(default)]
    pub(crate) enabled: Option<bool>,
    /// The new event types (same values as at creation).
    #[serde(default)]
    #[schema(min_items = 1, max_items = 32)]
    pub(crate) events: Option<Vec<String>>,
}

/// A webhook endpoint (never its secret).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"id": "wh_3f2a9c1d7e5b4a60", "url": "https://hooks.example.com/geodispatch", "events": ["order.accepted", "order.delivered"], "description": "ops dashboard", "enabled": true, "created_at": "2026-11-24T10:00:00Z", "consecutive_failures": 0, "backlog": 0}))]
pub(crate) struct Endpoint {
    /// Endpoint id.
    pub(crate) id: String,
    /// Target URL.
    pub(crate) url: String,
    /// Event types sent (`*`: all).
    pub(crate) events: Vec<String>,
    /// Free-form label.
    pub(crate) description: String,
    /// Whether messages are sent (disabled ones keep their backlog until enabled again).
    pub(crate) enabled: bool,
    /// Creation time.
    pub(crate) created_at: String,
    /// Deliveries dead-lettered in a row; at `webhook_disable_after` the endpoint is disabled.
    pub(crate) consecutive_failures: u64,
    /// Messages waiting to be delivered.
    pub(crate) backlog: u64,
}

/// A created endpoint: the signing secret is shown this once.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8GKYq=", "id": "wh_3f2a9c1d7e5b4a60", "url": "https://hooks.example.com/geodispatch", "events": ["*"], "description": "", "enabled": true, "created_at": "2026-11-24T10:00:00Z", "consecutive_failures": 0, "backlog": 0}))]
pub(crate) struct CreatedEndpoint {
    /// The signing secret (`whsec_` + base64 key bytes), to verify `webhook-signature`.
    pub(crate) secret: String,
    /// The endpoint.
    #[serde(flatten)]
    pub(crate) endpoint: Endpoint,
}

/// `GET /v1/admin/webhooks` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct EndpointList {
    /// Every endpoint, oldest first.
    pub(crate) webhooks: Vec<Endpoint>,
}

fn invalid(field: &str, message: impl Into<String>) -> WebhookError {
    WebhookError::Validation(vec![FieldError::new(field, message)])
}

/// The event types, checked and without repeats.
fn parse_events(events: Vec<String>) -> Result<Vec<String>, WebhookError> {
    if events.is_empty() || events.len() > MAX_EVENTS {
        return Err(invalid(
            "events",
            format!("list 1 to {MAX_EVENTS} event types"),
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for e in events {
        if e != "*" && !EVENT_TYPES.contains(&e.as_str()) {
            return Err(invalid(
                "events",
                format!(
                    "unknown event type {e:?}; use * or one of {}",
                    EVENT_TYPES.join(", ")
                ),
            ));
        }
        if !out.contains(&e) {
            out.push(e);
        }
    }
    Ok(out)
}

/// Validate a URL fully (form, then where its host resolves).
async fn check_url(hooks: &Webhooks, raw: &str) -> Result<String, WebhookError> {
    let settings = hooks.settings();
    let url = super::safety::parse_url(raw, settings.webhook_allow_http)
        .map_err(|m| invalid("url", m))?;
    super::safety::check_host(&url, settings.webhook_allow_private)
        .await
        .map_err(|m| invalid("url", m))?;
    Ok(url.to_string())
}

/// The lanes an endpoint hash says it was created with.
pub(crate) fn lanes_in(h: &HashMap<String, String>) -> u32 {
    h.get("lanes").and_then(|l| l.parse().ok()).unwrap_or(1)
}

impl Endpoint {
    /// Decode an endpoint hash (`None` when it is absent).
    pub(crate) fn from_hash(id: &str, h: &HashMap<String, String>) -> Option<Self> {
        let url = h.get("url")?.clone();
        let num = |k: &str| h.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
        Some(Self {
            id: id.to_owned(),
            url,
            events: h
                .get("events")
                .map(|e| e.split(',').map(str::to_owned).collect())
                .unwrap_or_default(),
            description: h.get("description").cloned().unwrap_or_default(),
            enabled: h.get("enabled").is_some_and(|v| v == "1"),
            created_at: h.get("created_at").cloned().unwrap_or_default(),
            consecutive_failures: num("failures"),
            backlog: num("backlog"),
        })
    }

    /// Whether events of type `kind` (`order.accepted`) go to this endpoint.
    pub(crate) fn wants(&self, kind: &str) -> bool {
        self.events.iter().any(|e| e == "*" || e == kind)
    }
}

impl Webhooks {
    /// Create an endpoint; the answer carries its secret, shown only now.
    pub(crate) async fn create(&self, body: NewEndpoint) -> Result<CreatedEndpoint, WebhookError> {
        let Some(master) = self.settings().webhook_signing_key.clone() else {
            return Err(WebhookError::NotConfigured);
        };
        let events = parse_events(body.events)?;
        let description = body.description.unwrap_or_default();
        if description.chars().count() > MAX_DESCRIPTION {
            return Err(invalid(
                "description",
                format!("at most {MAX_DESCRIPTION} characters"),
            ));
        }
        let url = check_url(self, &body.url).await?;
        let id = format!("wh_{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
        let salt = uuid::Uuid::new_v4().simple().to_string();
        let created_at = crate::domain::rfc3339_ms(self.store().local_now_ms());
        let keys = self.store().keys();
        let lanes = self.settings().webhook_lanes;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset_multiple(
                keys.webhook_endpoint(&id),
                &[
                    ("url", url.clone()),
                    ("events", events.join(",")),
                    ("description", description.clone()),
                    ("enabled", "1".to_owned()),
                    ("salt", salt.clone()),
                    ("created_at", created_at.clone()),
                    ("lanes", lanes.to_string()),
                    ("failures", "0".to_owned()),
                    ("backlog", "0".to_owned()),
                ],
            )
            .ignore()
            .sadd(keys.webhook_endpoints(), &id)
            .ignore();
        pipe.query_async::<()>(&mut self.store().conn())
            .await
            .map_err(WebhookError::redis("creating a webhook endpoint"))?;
        let secret = secret_text(&derive_secret(
            master.expose_secret().as_bytes(),
            &id,
            &salt,
        ));
        tracing::info!(webhook = %id, url = %url, "webhook endpoint created");
        Ok(CreatedEndpoint {
            secret,
            endpoint: Endpoint {
                id,
                url,
                events,
                description,
                enabled: true,
                created_at,
                consecutive_failures: 0,
                backlog: 0,
            },
        })
    }

    /// One endpoint's raw hash (empty when absent).
    pub(crate) async fn endpoint_hash(
        &self,
        id: &str,
    ) -> Result<HashMap<String, String>, WebhookError> {
        if !super::valid_id(id) {
            return Ok(HashMap::new());
        }
        redis::cmd("HGETALL")
            .arg(self.store().keys().webhook_endpoint(id))
            .query_async(&mut self.store().conn())
            .await
            .map_err(WebhookError::redis("reading a webhook endpoint"))
    }

    /// One endpoint.
    pub(crate) async fn get(&self, id: &str) -> Result<Endpoint, WebhookError> {
        let h = self.endpoint_hash(id).await?;
        Endpoint::from_hash(id, &h).ok_or_else(|| WebhookError::NotFound(id.to_owned()))
    }

    /// Every endpoint with its number of lanes, oldest first.
    pub(crate) async fn all(&self) -> Result<Vec<(Endpoint, u32)>, WebhookError> {
        let keys = self.store().keys();
        let mut conn = self.store().conn();
        let ids: Vec<String> = redis::cmd("SMEMBERS")
            .arg(keys.webhook_endpoints())
            .query_async(&mut conn)
            .await
            .map_err(WebhookError::redis("listing webhook endpoints"))?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hgetall(keys.webhook_endpoint(id));
        }
        let hashes: Vec<HashMap<String, String>> = pipe
            .query_async(&mut conn)
            .await
            .map_err(WebhookError::redis("reading webhook endpoints"))?;
        let mut out: Vec<_> = ids
            .iter()
            .zip(hashes)
            .filter_map(|(id, h)| Endpoint::from_hash(id, &h).map(|e| (e, lanes_in(&h))))
            .collect();
        out.sort_by(|a, b| {
            (a.0.created_at.as_str(), a.0.id.as_str())
                .cmp(&(b.0.created_at.as_str(), b.0.id.as_str()))
        });
        Ok(out)
    }

    /// Every endpoint's id and backlog (for the metrics; none without webhooks configured,
    /// so that a scrape asks Redis nothing then).
    pub(crate) async fn backlogs(&self) -> Result<Vec<(String, u64)>, WebhookError> {
        if self.settings().webhook_signing_key.is_none() {
            return Ok(Vec::new());
        }
        Ok(self
            .all()
            .await?
            .into_iter()
            .map(|(e, _)| (e.id, e.backlog))
            .collect())
    }

    /// Every endpoint, oldest first.
    pub(crate) async fn list(&self) -> Result<EndpointList, WebhookError> {
        Ok(EndpointList {
            webhooks: self.all().await?.into_iter().map(|(e, _)| e).collect(),
        })
    }

    /// Change an endpoint's events or state. Enabling it resets its run of failures and makes
    /// its waiting lanes due now.
    pub(crate) async fn patch(
        &self,
        id: &str,
        patch: EndpointPatch,
    ) -> Result<Endpoint, WebhookError> {
        let events = patch.events.map(parse_events).transpose()?;
        let keys = self.store().keys();
        let lanes = self.lanes_of(id).await?;
        let args = super::scripts::PatchArgs {
            events: events.map(|e| e.join(",")),
            enabled: patch.enabled,
            lanes: (0..lanes)
                .map(|lane| super::lane_member(id, lane))
                .collect(),
        };
        let cmd = scripts::evalsha(
            &scripts::WEBHOOK_PATCH,
            &[keys.webhook_endpoint(id), keys.webhook_due()],
            &args.argv(),
        );
        let found = scripts::run(&mut self.store().conn(), &scripts::WEBHOOK_PATCH, &cmd)
            .await
            .and_then(super::scripts::decode_patch)
            .map_err(WebhookError::redis("changing a webhook endpoint"))?;
        if !found {
            return Err(WebhookError::NotFound(id.to_owned()));
        }
        self.get(id).await
    }

    /// The number of lanes endpoint `id` was created with (0 when it does not exist).
    pub(crate) async fn lanes_of(&self, id: &str) -> Result<u32, WebhookError> {
        if !super::valid_id(id) {
            return Err(WebhookError::NotFound(id.to_owned()));
        }
        let lanes: Option<u32> = redis::cmd("HGET")
            .arg(self.store().keys().webhook_endpoint(id))
            .arg("lanes")
            .query_async(&mut self.store().conn())
            .await
            .map_err(WebhookError::redis("reading a webhook endpoint"))?;
        Ok(lanes.unwrap_or(0))
    }

    /// Delete an endpoint with its backlog and delivery log.
    pub(crate) async fn delete(&self, id: &str) -> Result<(), WebhookError> {
        let keys = self.store().keys();
        let lanes = self.lanes_of(id).await?;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .srem(keys.webhook_endpoints(), id)
            .del(keys.webhook_endpoint(id))
            .ignore()
            .del(keys.webhook_log(id))
            .ignore();
        for lane in 0..lanes {
            let member = super::lane_member(id, lane);
            pipe.del(keys.webhook_lane(id, lane))
                .ignore()
                .zrem(keys.webhook_due(), &member)
                .ignore()
                .hdel(
                    keys.webhook_leases(),
                    &[member.clone(), format!("{member}:tries")],
                )
                .ignore();
        }
        let (removed,): (i64,) = pipe
            .query_async(&mut self.store().conn())
            .await
            .map_err(WebhookError::redis("deleting a webhook endpoint"))?;
        if removed == 0 {
            return Err(WebhookError::NotFound(id.to_owned()));
        }
        tracing::info!(webhook = %id, "webhook endpoint deleted");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_lists_are_checked_and_deduplicated() {
        let ok = parse_events(vec!["order.accepted".into(), "*".into(), "*".into()]).unwrap();
        assert_eq!(ok, ["order.accepted", "*"]);
        for (bad, why) in [
            (vec![], "an endpoint must want something"),
            (vec!["order.teleported".to_owned()], "not an event type"),
            (vec!["accepted".to_owned()], "types carry the order. prefix"),
        ] {
            assert!(parse_events(bad.clone()).is_err(), "{bad:?}: {why}");
        }
    }
}
