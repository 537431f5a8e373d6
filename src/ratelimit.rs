//! Rate limits: three algorithms, each one Lua script in `lua/` (fixed window, sliding window
//! log, token bucket), chosen per route class in the settings (`rate_limit_location`,
//! `rate_limit_dispatch`, `rate_limit_default`), with the IETF `RateLimit-Policy` and
//! `RateLimit` answer headers (draft-ietf-httpapi-ratelimit-headers) and `Retry-After` on 429.
//!
//! Why three: a fixed window is the cheapest (one INCR) but lets up to twice its limit through
//! across a window edge; the sliding log is exact but keeps one entry per request; the token
//! bucket allows a burst and then a steady rate, which suits phones that report in bursts
//! after a tunnel. Keys: `{prefix}:rl:{class}:{subject}` (one key per script call, so each
//! script stays in one Cluster slot).
//!
//! The HTTP layer decides which class and subject a request counts against and turns a
//! [`Decision`] into its headers; nothing here knows about HTTP.

pub use crate::domain::Policy;
use crate::store::Store;
use crate::store::scripts::{self, evalsha};
use crate::store::scripts::{RATE_FIXED_WINDOW, RATE_SLIDING_LOG, RATE_TOKEN_BUCKET};

/// Why a rate limit could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum RateLimitError {
    /// The limit's script failed in Redis.
    #[error("rate limit: {0}")]
    Redis(#[source] redis::RedisError),
}

/// The answer of one check.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// Requests left in the current window (whole tokens for a bucket).
    pub remaining: u64,
    /// Milliseconds until the quota is whole again.
    pub reset_ms: u64,
    /// Milliseconds until a rejected request may be retried.
    pub retry_after_ms: u64,
}

impl Decision {
    /// `RateLimit-Policy` and `RateLimit` header names (lower case) and values for `class`
    /// under `policy`.
    pub fn headers(&self, class: &str, policy: &Policy) -> [(&'static str, String); 2] {
        let (q, w) = policy.quota_and_window();
        [
            ("ratelimit-policy", format!("\"{class}\";q={q};w={w}")),
            (
                "ratelimit",
                format!(
                    "\"{class}\";r={};t={}",
                    self.remaining,
                    self.reset_ms.div_ceil(1000)
                ),
            ),
        ]
    }

    /// `Retry-After` in whole seconds (at least 1).
    pub fn retry_after_s(&self) -> u64 {
        self.retry_after_ms.div_ceil(1000).max(1)
    }
}

/// The rate-limit key of `subject` in `class`.
pub fn key(store: &Store, class: &str, subject: &str) -> String {
    store.keys().rate_limit(class, subject)
}

/// Count one request of `subject` in `class` under `policy`.
pub async fn check(
    store: &Store,
    class: &str,
    policy: &Policy,
    subject: &str,
) -> Result<Decision, RateLimitError> {
    let key = key(store, class, subject);
    let mut conn = store.conn();
    match *policy {
        Policy::Fixed { limit, window_ms } => {
            let cmd = evalsha(&RATE_FIXED_WINDOW, &[&key], &[limit, window_ms]);
            let (allowed, remaining, reset): (u8, u64, u64) =
                scripts::run(&mut conn, &RATE_FIXED_WINDOW, &cmd)
                    .await
                    .map_err(RateLimitError::Redis)?;
            Ok(Decision {
                allowed: allowed == 1,
                remaining,
                reset_ms: reset,
                retry_after_ms: reset,
            })
        }
        Policy::Sliding { limit, window_ms } => {
            let id = uuid::Uuid::new_v4().simple().to_string();
            let cmd = evalsha(
                &RATE_SLIDING_LOG,
                &[&key],
                &[limit.to_string(), window_ms.to_string(), id],
            );
            let (allowed, remaining, reset): (u8, u64, u64) =
                scripts::run(&mut conn, &RATE_SLIDING_LOG, &cmd)
                    .await
                    .map_err(RateLimitError::Redis)?;
            Ok(Decision {
                allowed: allowed == 1,
                remaining,
                reset_ms: reset,
                retry_after_ms: reset,
            })
        }
        Policy::TokenBucket { burst, per_second } => {
            let cmd = evalsha(
                &RATE_TOKEN_BUCKET,
                &[&key],
                &[burst.to_string(), per_second.to_string()],
            );
            let (allowed, tokens, next, full): (u8, u64, u64, u64) =
                scripts::run(&mut conn, &RATE_TOKEN_BUCKET, &cmd)
                    .await
                    .map_err(RateLimitError::Redis)?;
            Ok(Decision {
                allowed: allowed == 1,
                remaining: tokens,
                reset_ms: full,
                retry_after_ms: next,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_and_describe_themselves() {
        assert_eq!(
            Policy::parse("token_bucket:10:2").unwrap(),
            Policy::TokenBucket {
                burst: 10,
                per_second: 2.0
            }
        );
        assert_eq!(
            Policy::parse("sliding:600:60000")
                .unwrap()
                .quota_and_window(),
            (600, 60)
        );
        assert_eq!(
            Policy::parse("token_bucket:10:2")
                .unwrap()
                .quota_and_window(),
            (10, 5)
        );
        for bad in [
            "",
            "fixed",
            "fixed:0:1000",
            "sliding:5",
            "leaky:1:1",
            "token_bucket:5:-1",
            "fixed:5:x",
        ] {
            assert!(Policy::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn headers_follow_the_ietf_draft() {
        let d = Decision {
            allowed: true,
            remaining: 7,
            reset_ms: 1_500,
            retry_after_ms: 0,
        };
        let p = Policy::Fixed {
            limit: 10,
            window_ms: 60_000,
        };
        assert_eq!(
            d.headers("default", &p),
            [
                ("ratelimit-policy", "\"default\";q=10;w=60".to_owned()),
                ("ratelimit", "\"default\";r=7;t=2".to_owned())
            ]
        );
    }
}
