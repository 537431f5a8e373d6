//! A rate-limit policy as the settings spell it (`token_bucket:10:2`, `sliding:600:60000`,
//! `fixed:1200:60000`): which algorithm, with which parameters.

/// A rate-limit algorithm and its parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Policy {
    /// At most `limit` requests per window of `window_ms`, the window starting at the first.
    Fixed {
        /// Requests per window.
        limit: u64,
        /// Window length.
        window_ms: u64,
    },
    /// At most `limit` requests in any `window_ms`.
    Sliding {
        /// Requests per window.
        limit: u64,
        /// Window length.
        window_ms: u64,
    },
    /// Up to `burst` at once, then `per_second`.
    TokenBucket {
        /// Capacity.
        burst: u64,
        /// Refill rate.
        per_second: f64,
    },
}

impl Policy {
    /// Parse `fixed:LIMIT:WINDOW_MS`, `sliding:LIMIT:WINDOW_MS` or
    /// `token_bucket:BURST:PER_SECOND`.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let parts: Vec<&str> = spec.split(':').collect();
        let bad = || {
            format!(
                "{spec:?} is not fixed:LIMIT:WINDOW_MS, sliding:LIMIT:WINDOW_MS or token_bucket:BURST:PER_SECOND"
            )
        };
        let [kind, a, b] = parts.as_slice() else {
            return Err(bad());
        };
        let int = |s: &str| s.parse::<u64>().ok().filter(|v| *v > 0).ok_or_else(bad);
        match *kind {
            "fixed" => Ok(Policy::Fixed {
                limit: int(a)?,
                window_ms: int(b)?,
            }),
            "sliding" => Ok(Policy::Sliding {
                limit: int(a)?,
                window_ms: int(b)?,
            }),
            "token_bucket" => {
                let per_second = b
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v > 0.0)
                    .ok_or_else(bad)?;
                Ok(Policy::TokenBucket {
                    burst: int(a)?,
                    per_second,
                })
            }
            _ => Err(bad()),
        }
    }

    /// Quota (`q`) and window in seconds (`w`) for `RateLimit-Policy`.
    pub(crate) fn quota_and_window(&self) -> (u64, u64) {
        match *self {
            Policy::Fixed { limit, window_ms } | Policy::Sliding { limit, window_ms } => {
                (limit, window_ms.div_ceil(1000).max(1))
            }
            Policy::TokenBucket { burst, per_second } => {
                (burst, ((burst as f64 / per_second).ceil() as u64).max(1))
            }
        }
    }
}
