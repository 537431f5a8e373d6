//! What `lua/touch_session.lua` takes and answers: one typed field per ARGV slot, pushed in the
//! script's order by `argv`, and its reply decoded into an enum (the slots and replies are
//! documented in the script's header).

/// The ARGV of one `touch_session.lua` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TouchSessionArgs {
    /// `ARGV[1]`: the idle timeout in ms (sliding expiry, capped by the absolute one).
    pub(crate) idle_ms: u64,
}

impl TouchSessionArgs {
    /// The slots in the script's order.
    pub(super) fn argv(&self) -> Vec<String> {
        vec![self.idle_ms.to_string()]
    }
}

/// A reply of `touch_session.lua`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum TouchReply {
    /// `{key_id, role, driver, expires}`: the session is live and its idle expiry extended.
    Live {
        /// The API key that opened the session.
        key_id: String,
        /// The key's role as stored (the caller parses it).
        role: String,
        /// The driver the session is bound to (`''` for none).
        driver: String,
        /// The absolute expiry, ms since the epoch.
        expires_ms: u64,
    },
    /// `{}`: the session is unknown, expired or its key revoked.
    Gone,
}

impl TouchReply {
    /// Decode the script's reply.
    pub(super) fn decode(reply: Vec<String>) -> redis::RedisResult<Self> {
        let bad = |reply: &[String]| {
            redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "unexpected script reply",
                format!("touch_session replied {reply:?}"),
            ))
        };
        match <[String; 4]>::try_from(reply) {
            Ok([key_id, role, driver, expires]) => {
                let Ok(expires_ms) = expires.parse() else {
                    return Err(bad(&[key_id, role, driver, expires]));
                };
                Ok(TouchReply::Live {
                    key_id,
                    role,
                    driver,
                    expires_ms,
                })
            }
            Err(reply) if reply.is_empty() => Ok(TouchReply::Gone),
            Err(reply) => Err(bad(&reply)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn touch_session_args_fill_their_slot() {
        assert_eq!(TouchSessionArgs { idle_ms: 1_800_000 }.argv(), ["1800000"]);
    }

    #[test]
    fn touch_session_replies_decode() {
        assert_eq!(
            TouchReply::decode(strings(&["k1", "driver", "d7", "1700000000000"])).unwrap(),
            TouchReply::Live {
                key_id: "k1".into(),
                role: "driver".into(),
                driver: "d7".into(),
                expires_ms: 1_700_000_000_000
            }
        );
        assert_eq!(TouchReply::decode(Vec::new()).unwrap(), TouchReply::Gone);
    }

    #[test]
    fn malformed_touch_session_replies_are_errors_naming_the_script() {
        for (reply, why) in [
            (strings(&["k1", "driver", "d7"]), "too short"),
            (strings(&["k1", "driver", "d7", "1", "x"]), "too long"),
            (
                strings(&["k1", "driver", "d7", "soon"]),
                "expiry not a number",
            ),
        ] {
            let err = TouchReply::decode(reply).unwrap_err();
            assert!(err.to_string().contains("touch_session"), "{why}: {err}");
        }
    }
}
