//! Delivery: senders take due lanes (`webhook_claim.lua`: the lane that has been due longest,
//! under a lease of `webhook_timeout_ms` + [`LEASE_MARGIN_MS`]), send the lane's head, and
//! record the attempt (`webhook_settle.lua`, only while the lease is still theirs). A lane holds
//! one request at a time, so an order's messages arrive in order; an endpoint has
//! `webhook_lanes` lanes, so that many requests at most; an instance runs
//! `webhook_max_in_flight` requests at most. A sender that dies mid-request holds its lane
//! until the lease ends; then any instance takes it and sends the head again (at least once).
//!
//! Answers: 2xx is delivered; 429, 5xx, timeouts and connection errors are retried after the
//! next delay of `webhook_retry_schedule_ms` (±20% jitter, or a longer `Retry-After`), and
//! dead-lettered after the last; 410 Gone is dead-lettered and disables the endpoint; any other
//! answer is dead-lettered at once. `webhook_disable_after` dead letters in a row disable the
//! endpoint.

use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::ExposeSecret;

use super::Webhooks;
use super::fanout::Message;
use super::scripts::{ClaimArgs, ClaimReply, Outcome, SettleArgs, SettleReply};
use super::signing::{derive_secret, sign};
use crate::store::scripts;

/// Time a lease lasts beyond the request timeout (settling, a slow Redis).
pub(crate) const LEASE_MARGIN_MS: u64 = 2_000;
/// The most of an answer's body a sender reads (the rest is dropped with the connection).
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// How often an idle sender looks for due lanes.
const POLL_MS: u64 = 50;
/// How long a lane of a disabled endpoint is left before it is looked at again (enabling the
/// endpoint makes it due at once).
const PARK_MS: i64 = 3_600_000;

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// 2xx.
    Delivered(u16),
    /// 429, 5xx, timeout or connection error: again later (`Retry-After` seconds if given).
    Retry {
        /// The status (0: no answer).
        code: u16,
        /// `Retry-After` in seconds, when the answer had one.
        retry_after: Option<u64>,
        /// What went wrong.
        error: String,
    },
    /// 410 Gone: the receiver says the endpoint is no more.
    Gone,
    /// Any other answer: not retried.
    Rejected(u16),
}

/// Classify an HTTP status (with its `Retry-After` seconds).
pub(crate) fn classify(status: u16, retry_after: Option<u64>) -> Attempt {
    match status {
        200..=299 => Attempt::Delivered(status),
        410 => Attempt::Gone,
        429 | 500..=599 | 408 => Attempt::Retry {
            code: status,
            retry_after,
            error: format!("HTTP {status}"),
        },
        other => Attempt::Rejected(other),
    }
}

/// A random number in [0, 1) (from a v4 UUID: jitter needs no better randomness).
fn unit_random() -> f64 {
    let bits = uuid::Uuid::new_v4().as_u64_pair().0 >> 11;
    bits as f64 / (1u64 << 53) as f64
}

/// The delay (ms) before attempt `tries + 1` after `tries` failures, or `None` when the
/// schedule is exhausted: the schedule's delay with ±20% jitter, or `Retry-After` when longer
/// (capped at the schedule's longest delay).
pub(crate) fn next_delay(schedule: &[u64], tries: u32, retry_after: Option<u64>) -> Option<u64> {
    let base = *schedule.get(tries.checked_sub(1)? as usize)?;
    let jittered = (base as f64 * (0.8 + 0.4 * unit_random())).round() as u64;
    let longest = schedule.iter().copied().max().unwrap_or(base);
    Some(match retry_after {
        Some(secs) => jittered.max(secs.saturating_mul(1000).min(longest)),
        None => jittered,
    })
}

/// The client every delivery uses: the request timeout, no redirects, the guarded resolver.
pub(crate) fn client(settings: &crate::config::Settings) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_millis(settings.webhook_timeout_ms))
        .connect_timeout(Duration::from_millis(settings.webhook_timeout_ms))
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(super::safety::resolver(settings.webhook_allow_private))
        .user_agent(concat!("geodispatch-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the webhook client builds")
}

/// What one settle records.
struct Record<'a> {
    outcome: Outcome,
    id: &'a str,
    next_ms: i64,
    attempt: u32,
    code: u16,
    latency_ms: u64,
    error: &'a str,
}

impl Record<'_> {
    /// A record without an attempt (an empty or parked lane).
    fn bare(outcome: Outcome, next_ms: i64) -> Self {
        Record {
            outcome,
            id: "",
            next_ms,
            attempt: 0,
            code: 0,
            latency_ms: 0,
            error: "",
        }
    }
}

/// A lane taken by a sender.
struct Claimed {
    endpoint: String,
    lane: u32,
    member: String,
    token: String,
    tries: u32,
}

impl Webhooks {
    /// Take the lane due longest, if any.
    async fn claim(&self) -> redis::RedisResult<Option<Claimed>> {
        let keys = self.store().keys();
        let token = uuid::Uuid::new_v4().simple().to_string();
        let args = ClaimArgs {
            lease_ms: self.settings().webhook_timeout_ms + LEASE_MARGIN_MS,
            token: token.clone(),
        };
        let cmd = scripts::evalsha(
            &scripts::WEBHOOK_CLAIM,
            &[keys.webhook_due(), keys.webhook_leases()],
            &args.argv(),
        );
        let reply = ClaimReply::decode(
            scripts::run(&mut self.store().conn(), &scripts::WEBHOOK_CLAIM, &cmd).await?,
        )?;
        let ClaimReply::Claimed { member, tries } = reply else {
            return Ok(None);
        };
        let Some((endpoint, lane)) = member.rsplit_once(':') else {
            return Ok(None);
        };
        Ok(Some(Claimed {
            endpoint: endpoint.to_owned(),
            lane: lane.parse().unwrap_or(0),
            member: member.clone(),
            token,
            tries,
        }))
    }

    /// Record an attempt's end (or hand the lane back).
    async fn settle(&self, c: &Claimed, record: Record<'_>) -> redis::RedisResult<SettleReply> {
        let args = SettleArgs {
            member: c.member.clone(),
            token: c.token.clone(),
            outcome: record.outcome,
            id: record.id.to_owned(),
            next_ms: record.next_ms,
            disable_after: self.settings().webhook_disable_after,
            attempt: record.attempt,
            code: record.code,
            latency_ms: record.latency_ms,
            error: record.error.to_owned(),
        };
        let cmd = scripts::evalsha(
            &scripts::WEBHOOK_SETTLE,
            &self
                .store()
                .keys()
                .webhook_settle_script(&c.endpoint, c.lane),
            &args.argv(),
        );
        SettleReply::decode(
            scripts::run(&mut self.store().conn(), &scripts::WEBHOOK_SETTLE, &cmd).await?,
        )
    }

    /// POST one message, signed.
    async fn post(&self, client: &reqwest::Client, url: &str, key: &[u8], m: &Message) -> Attempt {
        if !self.settings().webhook_allow_private
            && let Ok(parsed) = reqwest::Url::parse(url)
            && let Some(host) = parsed.host_str()
            && let Ok(ip) = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
            && super::safety::is_internal(ip)
        {
            return Attempt::Rejected(0);
        }
        let timestamp = self.store().local_now_ms() / 1000;
        let signature = sign(key, &m.id, timestamp, m.payload.as_bytes());
        let sent = client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &m.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(m.payload.clone())
            .send()
            .await;
        match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok());
                // Read the answer (bounded by the timeout, and by MAX_ANSWER_BYTES so that a
                // receiver cannot make the sender hold a large body), so that a slow body
                // counts as slow, then drop it: it is never stored.
                let mut response = response;
                let mut read = 0usize;
                let body = loop {
                    match response.chunk().await {
                        Ok(Some(chunk)) => {
                            read += chunk.len();
                            if read >= MAX_ANSWER_BYTES {
                                break Ok(());
                            }
                        }
                        Ok(None) => break Ok(()),
                        Err(e) => break Err(e),
                    }
                };
                match (classify(status, retry_after), body) {
                    (Attempt::Delivered(_), Err(e)) => Attempt::Retry {
                        code: status,
                        retry_after: None,
                        error: format!("reading the answer: {e}"),
                    },
                    (attempt, _) => attempt,
                }
            }
            Err(e) => Attempt::Retry {
                code: 0,
                retry_after: None,
                error: if e.is_timeout() {
                    "timeout".to_owned()
                } else if e.is_connect() {
                    "connection failed".to_owned()
                } else {
                    "request failed".to_owned()
                },
            },
        }
    }

    /// Send the head of a claimed lane and record what happened.
    async fn deliver(&self, client: &reqwest::Client, c: Claimed) -> redis::RedisResult<()> {
        let keys = self.store().keys();
        let (endpoint, head): (std::collections::HashMap<String, String>, Option<String>) =
            redis::pipe()
                .hgetall(keys.webhook_endpoint(&c.endpoint))
                .lindex(keys.webhook_lane(&c.endpoint, c.lane), 0)
                .query_async(&mut self.store().conn())
                .await?;
        let park_until = self.store().redis_now_ms() + PARK_MS;
        let Some(head) = head else {
            self.settle(&c, Record::bare(Outcome::Empty, 0)).await?;
            return Ok(());
        };
        let Some(master) = self.settings().webhook_signing_key.as_ref() else {
            return Ok(());
        };
        let (Some(url), Some(salt)) = (endpoint.get("url"), endpoint.get("salt")) else {
            // Deleted meanwhile; its lanes went with it.
            self.settle(&c, Record::bare(Outcome::Empty, 0)).await?;
            return Ok(());
        };
        if endpoint.get("enabled").map(String::as_str) != Some("1") {
            self.settle(&c, Record::bare(Outcome::Park, park_until))
                .await?;
            return Ok(());
        }
        let Ok(message) = serde_json::from_str::<Message>(&head) else {
            tracing::error!(webhook = %c.endpoint, "unreadable webhook message; dead-lettering it");
            let record = Record {
                attempt: c.tries + 1,
                error: "unreadable message",
                ..Record::bare(Outcome::Dead, 0)
            };
            self.settle(&c, record).await?;
            return Ok(());
        };
        let key = derive_secret(master.expose_secret().as_bytes(), &c.endpoint, salt);
        let started = Instant::now();
        let attempt = self.post(client, url, &key, &message).await;
        let elapsed = started.elapsed();
        crate::metrics::observe(
            "geodispatch_webhook_delivery_seconds",
            &[],
            elapsed.as_secs_f64(),
        );
        let latency_ms = elapsed.as_millis() as u64;
        let number = c.tries + 1;
        let schedule = self.settings().webhook_retry_schedule().unwrap_or_default();
        let (outcome, code, next_ms, error) = match attempt {
            Attempt::Delivered(code) => (Outcome::Delivered, code, 0, String::new()),
            Attempt::Gone => (Outcome::Gone, 410, 0, "410 Gone".to_owned()),
            Attempt::Rejected(code) => (
                Outcome::Dead,
                code,
                0,
                if code == 0 {
                    "refused address".to_owned()
                } else {
                    format!("HTTP {code} (not retried)")
                },
            ),
            Attempt::Retry {
                code,
                retry_after,
                error,
            } => match next_delay(&schedule, number, retry_after) {
                Some(delay) => (
                    Outcome::Retry,
                    code,
                    self.store().redis_now_ms() + delay as i64,
                    error,
                ),
                None => (
                    Outcome::Dead,
                    code,
                    0,
                    format!("{error}; retry schedule exhausted"),
                ),
            },
        };
        crate::metrics::inc(
            "geodispatch_webhook_deliveries_total",
            &[("endpoint", &c.endpoint), ("outcome", outcome.as_str())],
        );
        let record = Record {
            outcome,
            id: &message.id,
            next_ms,
            attempt: number,
            code,
            latency_ms,
            error: &error,
        };
        let disabled = match self.settle(&c, record).await? {
            SettleReply::Recorded { disabled } => disabled,
            _ => {
                tracing::info!(webhook = %c.endpoint, id = %message.id, "webhook lane was taken over meanwhile; its new sender records the attempt");
                return Ok(());
            }
        };
        if matches!(outcome, Outcome::Dead | Outcome::Gone) {
            crate::metrics::inc(
                "geodispatch_webhook_dead_letters_total",
                &[("endpoint", &c.endpoint)],
            );
            tracing::warn!(webhook = %c.endpoint, id = %message.id, attempt = number, code, error = %error, "webhook delivery dead-lettered");
        }
        if disabled {
            crate::metrics::inc("geodispatch_webhook_endpoints_disabled_total", &[]);
            tracing::warn!(webhook = %c.endpoint, reason = %error, "webhook endpoint disabled");
            self.announce_disabled(&c.endpoint, &error).await?;
        }
        Ok(())
    }

    /// Queue an `endpoint.disabled` message for every enabled endpoint that wants it.
    async fn announce_disabled(&self, endpoint: &str, reason: &str) -> redis::RedisResult<()> {
        let at_ms = self.store().redis_now_ms();
        let message = |id: String| Message {
            id,
            kind: "endpoint.disabled".to_owned(),
            order: endpoint.to_owned(),
            payload: serde_json::json!({
                "type": "endpoint.disabled",
                "endpoint_id": endpoint,
                "reason": reason,
                "at_ms": at_ms,
            })
            .to_string(),
        };
        let id = format!("evt_webhooks_{endpoint}_{at_ms}");
        let all = match self.all().await {
            Ok(all) => all,
            Err(super::WebhookError::Redis { source, .. }) => return Err(source),
            Err(_) => return Ok(()),
        };
        let targets: Vec<_> = all
            .iter()
            .filter(|(e, _)| e.enabled && e.id != endpoint && e.wants("endpoint.disabled"))
            .map(|(e, lanes)| (e, *lanes, message(id.clone())))
            .collect();
        if !targets.is_empty() {
            self.enqueue(None, "", &targets).await?;
        }
        Ok(())
    }

    /// Send due messages for as long as the service runs.
    pub(crate) async fn run_senders(self) {
        let client = client(self.settings());
        let slots = Arc::new(tokio::sync::Semaphore::new(
            self.settings().webhook_max_in_flight,
        ));
        // Requests in flight belong to this task: when it is aborted (the instance stops),
        // they stop too, and their lanes are taken over when the leases end.
        let mut in_flight = tokio::task::JoinSet::new();
        loop {
            while in_flight.try_join_next().is_some() {}
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            match self.claim().await {
                Ok(Some(claimed)) => {
                    let (hooks, client) = (self.clone(), client.clone());
                    in_flight.spawn(async move {
                        if let Err(err) = hooks.deliver(&client, claimed).await {
                            tracing::warn!(error = %err, "webhook delivery step failed; the lane is taken again when its lease ends");
                        }
                        drop(permit);
                    });
                }
                Ok(None) => {
                    drop(permit);
                    tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
                }
                Err(err) => {
                    drop(permit);
                    tracing::warn!(error = %err, "claiming a webhook lane failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
}

/// Start the fan-out of every city and this instance's senders (nothing without
/// `webhook_signing_key`: no endpoint can exist).
pub fn spawn(hooks: &Webhooks, cities: &[String]) -> Vec<tokio::task::JoinHandle<()>> {
    if hooks.settings().webhook_signing_key.is_none() {
        return Vec::new();
    }
    let mut tasks: Vec<_> = cities
        .iter()
        .map(|city| tokio::spawn(hooks.clone().run_fan_out(city.clone())))
        .collect();
    tasks.push(tokio::spawn(hooks.clone().run_senders()));
    tasks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified_as_the_documentation_says() {
        assert_eq!(classify(204, None), Attempt::Delivered(204));
        assert_eq!(classify(410, None), Attempt::Gone);
        assert_eq!(classify(404, None), Attempt::Rejected(404));
        assert_eq!(classify(301, None), Attempt::Rejected(301));
        for retried in [429, 500, 502, 503, 408] {
            assert!(
                matches!(classify(retried, None), Attempt::Retry { .. }),
                "{retried}"
            );
        }
    }

    #[test]
    fn delays_follow_the_schedule_with_jitter_and_honour_retry_after() {
        let schedule = [1_000, 10_000, 60_000];
        for _ in 0..100 {
            let d = next_delay(&schedule, 1, None).unwrap();
            assert!((800..=1_200).contains(&d), "{d}");
        }
        assert!(
            next_delay(&schedule, 4, None).is_none(),
            "schedule exhausted"
        );
        let d = next_delay(&schedule, 1, Some(30)).unwrap();
        assert_eq!(d, 30_000, "Retry-After wins when longer");
        let d = next_delay(&schedule, 1, Some(3_600)).unwrap();
        assert_eq!(d, 60_000, "capped at the longest delay");
    }
}
