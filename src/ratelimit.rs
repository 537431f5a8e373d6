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
    pub(crate) remaining: u64,
    /// Milliseconds until the quota is whole again.
    pub(crate) reset_ms: u64,
    /// Milliseconds until a rejected request may be retried.
    pub retry_after_ms: u64,
}

impl Decision {
    /// `RateLimit-Policy` and `RateLimit` header names (lower case) and values for `class`
    /// under `policy`.
    pub(crate) fn headers(&self, class: &str, policy: &Policy) -> [(&'static str, String); 2] {
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
    pub(crate) fn retry_after_s(&self) -> u64 {
        self.retry_after_ms.div_ceil(1000).max(1)
    }
}

/// The rate-limit key of `subject` in `class`.
pub(crate) fn key(store: &Store, class: &str, subject: &str) -> String {
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
    let reply = match *policy {
        Policy::Fixed { limit, window_ms } => {
            let args = FixedWindowArgs { limit, window_ms };
            let cmd = evalsha(&RATE_FIXED_WINDOW, &[&key], &args.argv());
            let reply: Vec<i64> = scripts::run(&mut conn, &RATE_FIXED_WINDOW, &cmd)
                .await
                .map_err(RateLimitError::Redis)?;
            RateReply::decode_window("rate_fixed_window", &reply)
        }
        Policy::Sliding { limit, window_ms } => {
            let args = SlidingLogArgs {
                limit,
                window_ms,
                request_id: uuid::Uuid::new_v4().simple().to_string(),
            };
            let cmd = evalsha(&RATE_SLIDING_LOG, &[&key], &args.argv());
            let reply: Vec<i64> = scripts::run(&mut conn, &RATE_SLIDING_LOG, &cmd)
                .await
                .map_err(RateLimitError::Redis)?;
            RateReply::decode_window("rate_sliding_log", &reply)
        }
        Policy::TokenBucket { burst, per_second } => {
            let args = TokenBucketArgs { burst, per_second };
            let cmd = evalsha(&RATE_TOKEN_BUCKET, &[&key], &args.argv());
            let reply: Vec<i64> = scripts::run(&mut conn, &RATE_TOKEN_BUCKET, &cmd)
                .await
                .map_err(RateLimitError::Redis)?;
            RateReply::decode_bucket(&reply)
        }
    };
    Ok(reply.map_err(RateLimitError::Redis)?.into())
}

/// The ARGV of one `rate_fixed_window.lua` call.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FixedWindowArgs {
    /// `ARGV[1]`: requests per window.
    pub(crate) limit: u64,
    /// `ARGV[2]`: the window in ms.
    pub(crate) window_ms: u64,
}

impl FixedWindowArgs {
    /// The slots in the script's order.
    pub(crate) fn argv(&self) -> Vec<String> {
        vec![self.limit.to_string(), self.window_ms.to_string()]
    }
}

/// The ARGV of one `rate_sliding_log.lua` call.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SlidingLogArgs {
    /// `ARGV[1]`: requests per window.
    pub(crate) limit: u64,
    /// `ARGV[2]`: the window in ms.
    pub(crate) window_ms: u64,
    /// `ARGV[3]`: a unique id for this request (its member in the log).
    pub(crate) request_id: String,
}

impl SlidingLogArgs {
    /// The slots in the script's order.
    pub(crate) fn argv(&self) -> Vec<String> {
        vec![
            self.limit.to_string(),
            self.window_ms.to_string(),
            self.request_id.clone(),
        ]
    }
}

/// The ARGV of one `rate_token_bucket.lua` call.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TokenBucketArgs {
    /// `ARGV[1]`: the bucket's capacity.
    pub(crate) burst: u64,
    /// `ARGV[2]`: refill rate, tokens per second.
    pub(crate) per_second: f64,
}

impl TokenBucketArgs {
    /// The slots in the script's order.
    pub(crate) fn argv(&self) -> Vec<String> {
        vec![self.burst.to_string(), self.per_second.to_string()]
    }
}

/// The reply of one rate-limit script, decoded.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RateReply {
    /// `rate_fixed_window.lua` and `rate_sliding_log.lua`:
    /// `{allowed (1|0), remaining, ms until the window resets}`.
    Window {
        allowed: bool,
        remaining: u64,
        reset_ms: u64,
    },
    /// `rate_token_bucket.lua`: `{allowed (1|0), whole tokens left, ms until the next token,
    /// ms until the bucket is full}`.
    Bucket {
        allowed: bool,
        tokens: u64,
        next_token_ms: u64,
        full_ms: u64,
    },
}

/// An error for an unexpected reply of `script`.
fn bad_reply(script: &'static str, reply: &[i64]) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::UnexpectedReturnType,
        "unexpected script reply",
        format!("{script} replied {reply:?}"),
    ))
}

/// `reply` as `N` flag-and-counts: the first 0 or 1, the rest not negative.
fn flag_and_counts<const N: usize>(
    script: &'static str,
    reply: &[i64],
) -> redis::RedisResult<(bool, [u64; N])> {
    let bad = || bad_reply(script, reply);
    let (flag, rest) = reply.split_first().ok_or_else(bad)?;
    if rest.len() != N {
        return Err(bad());
    }
    let allowed = match flag {
        1 => true,
        0 => false,
        _ => return Err(bad()),
    };
    let mut counts = [0u64; N];
    for (count, value) in counts.iter_mut().zip(rest) {
        *count = u64::try_from(*value).map_err(|_| bad())?;
    }
    Ok((allowed, counts))
}

impl RateReply {
    /// Decode the reply of a window script (`script` names it in the error).
    pub(crate) fn decode_window(script: &'static str, reply: &[i64]) -> redis::RedisResult<Self> {
        let (allowed, [remaining, reset_ms]) = flag_and_counts(script, reply)?;
        Ok(RateReply::Window {
            allowed,
            remaining,
            reset_ms,
        })
    }

    /// Decode the reply of `rate_token_bucket.lua`.
    pub(crate) fn decode_bucket(reply: &[i64]) -> redis::RedisResult<Self> {
        let (allowed, [tokens, next_token_ms, full_ms]) =
            flag_and_counts("rate_token_bucket", reply)?;
        Ok(RateReply::Bucket {
            allowed,
            tokens,
            next_token_ms,
            full_ms,
        })
    }
}

impl From<RateReply> for Decision {
    fn from(reply: RateReply) -> Self {
        match reply {
            RateReply::Window {
                allowed,
                remaining,
                reset_ms,
            } => Decision {
                allowed,
                remaining,
                reset_ms,
                retry_after_ms: reset_ms,
            },
            RateReply::Bucket {
                allowed,
                tokens,
                next_token_ms,
                full_ms,
            } => Decision {
                allowed,
                remaining: tokens,
                reset_ms: full_ms,
                retry_after_ms: next_token_ms,
            },
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

    #[test]
    fn rate_script_args_fill_their_slots_in_order() {
        assert_eq!(
            FixedWindowArgs {
                limit: 10,
                window_ms: 60_000
            }
            .argv(),
            ["10", "60000"]
        );
        assert_eq!(
            SlidingLogArgs {
                limit: 5,
                window_ms: 1_000,
                request_id: "abc".into()
            }
            .argv(),
            ["5", "1000", "abc"]
        );
        assert_eq!(
            TokenBucketArgs {
                burst: 10,
                per_second: 2.5
            }
            .argv(),
            ["10", "2.5"]
        );
        assert_eq!(
            TokenBucketArgs {
                burst: 10,
                per_second: 2.0
            }
            .argv(),
            ["10", "2"]
        );
    }

    #[test]
    fn window_replies_decode_into_decisions() {
        let allowed = RateReply::decode_window("rate_fixed_window", &[1, 9, 500]).unwrap();
        assert_eq!(
            allowed,
            RateReply::Window {
                allowed: true,
                remaining: 9,
                reset_ms: 500
            }
        );
        assert_eq!(
            Decision::from(allowed),
            Decision {
                allowed: true,
                remaining: 9,
                reset_ms: 500,
                retry_after_ms: 500
            }
        );
        let rejected = RateReply::decode_window("rate_sliding_log", &[0, 0, 1_200]).unwrap();
        assert_eq!(
            Decision::from(rejected),
            Decision {
                allowed: false,
                remaining: 0,
                reset_ms: 1_200,
                retry_after_ms: 1_200
            }
        );
    }

    #[test]
    fn bucket_replies_decode_into_decisions() {
        let reply = RateReply::decode_bucket(&[0, 0, 400, 4_000]).unwrap();
        assert_eq!(
            Decision::from(reply),
            Decision {
                allowed: false,
                remaining: 0,
                reset_ms: 4_000,
                retry_after_ms: 400
            }
        );
        let reply = RateReply::decode_bucket(&[1, 3, 0, 1_000]).unwrap();
        assert_eq!(
            reply,
            RateReply::Bucket {
                allowed: true,
                tokens: 3,
                next_token_ms: 0,
                full_ms: 1_000
            }
        );
    }

    #[test]
    fn malformed_rate_replies_are_errors_naming_the_script() {
        for (reply, why) in [
            (&[][..], "empty"),
            (&[1, 2][..], "too short"),
            (&[1, 2, 3, 4][..], "too long for a window"),
            (&[2, 0, 0][..], "allowed is neither 0 nor 1"),
            (&[1, -1, 0][..], "negative remaining"),
        ] {
            let err = RateReply::decode_window("rate_fixed_window", reply).unwrap_err();
            assert!(
                err.to_string().contains("rate_fixed_window"),
                "{why}: {err}"
            );
        }
        let err = RateReply::decode_bucket(&[1, 2, 3]).unwrap_err();
        assert!(err.to_string().contains("rate_token_bucket"), "{err}");
    }
}
