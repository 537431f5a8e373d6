//! What the webhook scripts take and answer: one typed field per ARGV slot, pushed in the
//! script's order by `argv`, and each reply decoded into a type that refuses an unexpected
//! shape (the slots and replies are documented in the scripts' headers).

fn unexpected(script: &str, reply: impl std::fmt::Debug) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::UnexpectedReturnType,
        "unexpected script reply",
        format!("{script} replied {reply:?}"),
    ))
}

/// The ARGV of `webhook_patch.lua`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PatchArgs {
    /// `ARGV[1]`: the new comma-separated event types (`None`: unchanged).
    pub(super) events: Option<String>,
    /// `ARGV[2]`: enable or disable (`None`: unchanged).
    pub(super) enabled: Option<bool>,
    /// `ARGV[3..]`: the endpoint's lane members, re-armed when enabling.
    pub(super) lanes: Vec<String>,
}

impl PatchArgs {
    /// The slots in the script's order.
    pub(super) fn argv(&self) -> Vec<String> {
        let mut out = vec![
            self.events.clone().unwrap_or_default(),
            match self.enabled {
                Some(true) => "1".to_owned(),
                Some(false) => "0".to_owned(),
                None => String::new(),
            },
        ];
        out.extend(self.lanes.iter().cloned());
        out
    }
}

/// Decode `webhook_patch.lua`'s reply: whether the endpoint exists.
pub(super) fn decode_patch(reply: i64) -> redis::RedisResult<bool> {
    match reply {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(unexpected("webhook_patch", other)),
    }
}

/// The ARGV of `webhook_fanout.lua`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FanoutArgs {
    /// `ARGV[1]`, `ARGV[2]`: the cursor read and the cursor after these events (`None`: a
    /// manual re-send, no cursor).
    pub(super) cursor: Option<(String, String)>,
    /// `ARGV[3]`: `webhook_max_backlog`.
    pub(super) max_backlog: u64,
    /// `ARGV[4..]`: per message, the lane's member and the message JSON (their KEYS come in
    /// the same order).
    pub(super) messages: Vec<(String, String)>,
}

impl FanoutArgs {
    /// The slots in the script's order.
    pub(super) fn argv(&self) -> Vec<String> {
        let (read, next) = self.cursor.clone().unwrap_or_default();
        let mut out = vec![read, next, self.max_backlog.to_string()];
        for (member, message) in &self.messages {
            out.push(member.clone());
            out.push(message.clone());
        }
        out
    }
}

/// A reply of `webhook_fanout.lua`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FanoutReply {
    /// The cursor was the one read (and moved): the messages were considered.
    pub(crate) moved: bool,
    /// Messages queued.
    pub(crate) queued: u64,
    /// Messages dropped (backlog full).
    pub(crate) dropped: u64,
}

impl FanoutReply {
    /// Decode the script's reply.
    pub(super) fn decode(reply: Vec<i64>) -> redis::RedisResult<Self> {
        match reply.as_slice() {
            [moved @ (0 | 1), queued, dropped] if *queued >= 0 && *dropped >= 0 => Ok(Self {
                moved: *moved == 1,
                queued: *queued as u64,
                dropped: *dropped as u64,
            }),
            _ => Err(unexpected("webhook_fanout", reply)),
        }
    }
}

/// The ARGV of `webhook_claim.lua`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ClaimArgs {
    /// `ARGV[1]`: the lease in ms.
    pub(super) lease_ms: u64,
    /// `ARGV[2]`: the sender's random token.
    pub(super) token: String,
}

impl ClaimArgs {
    /// The slots in the script's order.
    pub(super) fn argv(&self) -> Vec<String> {
        vec![self.lease_ms.to_string(), self.token.clone()]
    }
}

/// A reply of `webhook_claim.lua`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ClaimReply {
    /// `{member, tries}`: the lane taken, and the failed attempts of its head.
    Claimed {
        /// `<endpoint>:<lane>`.
        member: String,
        /// Failed attempts of the head so far.
        tries: u32,
    },
    /// `{}`: no lane is due.
    Idle,
}

impl ClaimReply {
    /// Decode the script's reply.
    pub(super) fn decode(reply: Vec<String>) -> redis::RedisResult<Self> {
        match <[String; 2]>::try_from(reply) {
            Ok([member, tries]) => match tries.parse() {
                Ok(tries) => Ok(ClaimReply::Claimed { member, tries }),
                Err(_) => Err(unexpected("webhook_claim", [member, tries])),
            },
            Err(reply) if reply.is_empty() => Ok(ClaimReply::Idle),
            Err(reply) => Err(unexpected("webhook_claim", reply)),
        }
    }
}

/// What a sender records about its lane (`ARGV[3]` of `webhook_settle.lua`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// 2xx.
    Delivered,
    /// Again at the next attempt's time.
    Retry,
    /// Given up.
    Dead,
    /// 410: given up, and the endpoint disabled.
    Gone,
    /// The endpoint is disabled: the lane waits.
    Park,
    /// Nothing to send.
    Empty,
}

impl Outcome {
    /// The name in the script and the delivery log.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Retry => "retry",
            Outcome::Dead => "dead",
            Outcome::Gone => "gone",
            Outcome::Park => "park",
            Outcome::Empty => "empty",
        }
    }
}

/// The ARGV of `webhook_settle.lua`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SettleArgs {
    /// `ARGV[1]`: the lane's member.
    pub(super) member: String,
    /// `ARGV[2]`: the sender's token.
    pub(super) token: String,
    /// `ARGV[3]`: what happened.
    pub(super) outcome: Outcome,
    /// `ARGV[4]`: the webhook id of the message sent.
    pub(super) id: String,
    /// `ARGV[5]`: the next attempt (retry) or when to look at a parked lane again, ms.
    pub(super) next_ms: i64,
    /// `ARGV[6]`: `webhook_disable_after`.
    pub(super) disable_after: u32,
    /// `ARGV[7]`: the attempt number.
    pub(super) attempt: u32,
    /// `ARGV[8]`: the HTTP status (0: none).
    pub(super) code: u16,
    /// `ARGV[9]`: the latency in ms.
    pub(super) latency_ms: u64,
    /// `ARGV[10]`: what went wrong.
    pub(super) error: String,
}

impl SettleArgs {
    /// The slots in the script's order.
    pub(super) fn argv(&self) -> Vec<String> {
        vec![
            self.member.clone(),
            self.token.clone(),
            self.outcome.as_str().to_owned(),
            self.id.clone(),
            self.next_ms.to_string(),
            self.disable_after.to_string(),
            self.attempt.to_string(),
            self.code.to_string(),
            self.latency_ms.to_string(),
            self.error.clone(),
        ]
    }
}

/// A reply of `webhook_settle.lua`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SettleReply {
    /// The lease was lost (taken over): nothing was changed.
    Stale,
    /// The lane was empty, or its due time was handed back.
    Empty,
    /// The lane waits for its endpoint to be enabled.
    Parked,
    /// The attempt was recorded; `disabled` when this dead letter disabled the endpoint.
    Recorded {
        /// The endpoint was disabled by this dead letter.
        disabled: bool,
    },
}

impl SettleReply {
    /// Decode the script's reply.
    pub(super) fn decode(reply: (String, i64)) -> redis::RedisResult<Self> {
        match (reply.0.as_str(), reply.1) {
            ("stale", 0) => Ok(SettleReply::Stale),
            ("empty", 0) => Ok(SettleReply::Empty),
            ("parked", 0) => Ok(SettleReply::Parked),
            ("delivered" | "retry" | "dead" | "gone", d @ (0 | 1)) => {
                Ok(SettleReply::Recorded { disabled: d == 1 })
            }
            _ => Err(unexpected("webhook_settle", reply)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_of_an_unexpected_shape_are_refused() {
        assert_eq!(
            FanoutReply::decode(vec![1, 2, 0]).unwrap(),
            FanoutReply {
                moved: true,
                queued: 2,
                dropped: 0
            }
        );
        assert!(FanoutReply::decode(vec![1, 2]).is_err());
        assert_eq!(ClaimReply::decode(vec![]).unwrap(), ClaimReply::Idle);
        assert!(ClaimReply::decode(vec!["wh_1:0".into()]).is_err());
        assert!(ClaimReply::decode(vec!["wh_1:0".into(), "x".into()]).is_err());
        assert_eq!(
            SettleReply::decode(("dead".into(), 1)).unwrap(),
            SettleReply::Recorded { disabled: true }
        );
        assert!(SettleReply::decode(("exploded".into(), 0)).is_err());
        assert!(decode_patch(2).is_err());
    }

    #[test]
    fn arguments_go_in_the_scripts_order() {
        let settle = SettleArgs {
            member: "wh_1:0".into(),
            token: "t".into(),
            outcome: Outcome::Retry,
            id: "evt_paris_1-0".into(),
            next_ms: 5,
            disable_after: 3,
            attempt: 2,
            code: 503,
            latency_ms: 7,
            error: "HTTP 503".into(),
        };
        assert_eq!(
            settle.argv(),
            [
                "wh_1:0",
                "t",
                "retry",
                "evt_paris_1-0",
                "5",
                "3",
                "2",
                "503",
                "7",
                "HTTP 503"
            ]
        );
        let patch = PatchArgs {
            events: None,
            enabled: Some(true),
            lanes: vec!["wh_1:0".into()],
        };
        assert_eq!(patch.argv(), ["", "1", "wh_1:0"]);
    }
}
