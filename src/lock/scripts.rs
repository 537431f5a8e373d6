//! What the lock scripts take and answer (`lua/acquire_lock.lua`, `lua/release_lock.lua`,
//! `lua/extend_lock.lua`, `lua/lock_order.lua`): one typed field per ARGV slot, pushed in the
//! script's order by `argv`, and each reply decoded into an enum (the slots and replies are
//! documented in each script's header).

/// An error for an unexpected reply of `script`.
fn bad_reply(script: &'static str, reply: impl std::fmt::Debug) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::UnexpectedReturnType,
        "unexpected script reply",
        format!("{script} replied {reply:?}"),
    ))
}

/// The ARGV of one `acquire_lock.lua` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AcquireLockArgs<'a> {
    /// `ARGV[1]`: the holder's random token.
    pub(crate) token: &'a str,
    /// `ARGV[2]`: the lock's time to live in ms.
    pub(crate) ttl_ms: u64,
}

impl AcquireLockArgs<'_> {
    /// The slots in the script's order.
    pub(crate) fn argv(&self) -> Vec<String> {
        vec![self.token.to_owned(), self.ttl_ms.to_string()]
    }
}

/// A reply of `acquire_lock.lua`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AcquireReply {
    /// The lock was taken; its fencing number (> 0).
    Acquired(u64),
    /// `0`: someone else holds the lock.
    Held,
}

impl AcquireReply {
    /// Decode the script's reply.
    pub(crate) fn decode(reply: i64) -> redis::RedisResult<Self> {
        match reply {
            0 => Ok(AcquireReply::Held),
            n if n > 0 => Ok(AcquireReply::Acquired(n as u64)),
            _ => Err(bad_reply("acquire_lock", reply)),
        }
    }
}

/// The ARGV of one `release_lock.lua` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReleaseLockArgs<'a> {
    /// `ARGV[1]`: the holder's token.
    pub(crate) token: &'a str,
}

impl ReleaseLockArgs<'_> {
    /// The slots in the script's order.
    pub(crate) fn argv(&self) -> Vec<String> {
        vec![self.token.to_owned()]
    }
}

/// A reply of `release_lock.lua`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReleaseReply {
    /// `1`: the lock was held by this token and is deleted.
    Released,
    /// `0`: the lock was not held by this token (left alone).
    NotHeld,
}

impl ReleaseReply {
    /// Decode the script's reply.
    pub(crate) fn decode(reply: i64) -> redis::RedisResult<Self> {
        match reply {
            1 => Ok(ReleaseReply::Released),
            0 => Ok(ReleaseReply::NotHeld),
            _ => Err(bad_reply("release_lock", reply)),
        }
    }
}

/// The ARGV of one `extend_lock.lua` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExtendLockArgs<'a> {
    /// `ARGV[1]`: the holder's token.
    pub(crate) token: &'a str,
    /// `ARGV[2]`: the new time to live in ms.
    pub(crate) ttl_ms: u64,
}

impl ExtendLockArgs<'_> {
    /// The slots in the script's order.
    pub(crate) fn argv(&self) -> Vec<String> {
        vec![self.token.to_owned(), self.ttl_ms.to_string()]
    }
}

/// A reply of `extend_lock.lua`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExtendReply {
    /// `1`: the lock was held by this token and now expires `ttl_ms` from now.
    Extended,
    /// `0`: the lock was not held by this token: the lease is lost.
    Lost,
}

impl ExtendReply {
    /// Decode the script's reply.
    pub(crate) fn decode(reply: i64) -> redis::RedisResult<Self> {
        match reply {
            1 => Ok(ExtendReply::Extended),
            0 => Ok(ExtendReply::Lost),
            _ => Err(bad_reply("extend_lock", reply)),
        }
    }
}

/// The ARGV of one `lock_order.lua` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LockOrderArgs<'a> {
    /// `ARGV[1]`: the holder's random token.
    pub(crate) token: &'a str,
    /// `ARGV[2]`: the lock's time to live in ms.
    pub(crate) ttl_ms: u64,
}

impl LockOrderArgs<'_> {
    /// The slots in the script's order.
    pub(crate) fn argv(&self) -> Vec<String> {
        vec![self.token.to_owned(), self.ttl_ms.to_string()]
    }
}

/// A reply of `lock_order.lua` (`{fencing, state}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LockOrderReply {
    /// `{fencing > 0, 'pending'}`: the lock was taken with this fencing number.
    Locked(u64),
    /// `{0, 'pending'}`: another holder has the lock.
    Contended,
    /// `{0, state}`: the order is not pending; its state.
    NotPending(String),
    /// `{0, ''}`: no such order.
    Missing,
}

impl LockOrderReply {
    /// Decode the script's reply.
    pub(crate) fn decode(reply: (i64, String)) -> redis::RedisResult<Self> {
        match (reply.0, reply.1.as_str()) {
            (0, "") => Ok(LockOrderReply::Missing),
            (0, "pending") => Ok(LockOrderReply::Contended),
            (0, _) => Ok(LockOrderReply::NotPending(reply.1)),
            (n, "pending") if n > 0 => Ok(LockOrderReply::Locked(n as u64)),
            _ => Err(bad_reply("lock_order", reply)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_script_args_fill_their_slots_in_order() {
        let acquire = AcquireLockArgs {
            token: "tok",
            ttl_ms: 5_000,
        };
        assert_eq!(acquire.argv(), ["tok", "5000"]);
        assert_eq!(ReleaseLockArgs { token: "tok" }.argv(), ["tok"]);
        let extend = ExtendLockArgs {
            token: "tok",
            ttl_ms: 3_000,
        };
        assert_eq!(extend.argv(), ["tok", "3000"]);
        let order = LockOrderArgs {
            token: "tok",
            ttl_ms: 2_000,
        };
        assert_eq!(order.argv(), ["tok", "2000"]);
    }

    #[test]
    fn acquire_replies_decode() {
        assert_eq!(AcquireReply::decode(7).unwrap(), AcquireReply::Acquired(7));
        assert_eq!(AcquireReply::decode(0).unwrap(), AcquireReply::Held);
        let err = AcquireReply::decode(-1).unwrap_err();
        assert!(err.to_string().contains("acquire_lock"), "{err}");
    }

    #[test]
    fn release_and_extend_replies_decode() {
        assert_eq!(ReleaseReply::decode(1).unwrap(), ReleaseReply::Released);
        assert_eq!(ReleaseReply::decode(0).unwrap(), ReleaseReply::NotHeld);
        let err = ReleaseReply::decode(2).unwrap_err();
        assert!(err.to_string().contains("release_lock"), "{err}");
        assert_eq!(ExtendReply::decode(1).unwrap(), ExtendReply::Extended);
        assert_eq!(ExtendReply::decode(0).unwrap(), ExtendReply::Lost);
        let err = ExtendReply::decode(-2).unwrap_err();
        assert!(err.to_string().contains("extend_lock"), "{err}");
    }

    #[test]
    fn lock_order_replies_decode() {
        let decode = |f: i64, s: &str| LockOrderReply::decode((f, s.to_owned()));
        assert_eq!(decode(12, "pending").unwrap(), LockOrderReply::Locked(12));
        assert_eq!(decode(0, "pending").unwrap(), LockOrderReply::Contended);
        assert_eq!(
            decode(0, "offered").unwrap(),
            LockOrderReply::NotPending("offered".into())
        );
        assert_eq!(decode(0, "").unwrap(), LockOrderReply::Missing);
        for (f, s, why) in [
            (
                3,
                "offered",
                "a fencing number for an order that is not pending",
            ),
            (-1, "pending", "a negative fencing number"),
            (4, "", "a fencing number for a missing order"),
        ] {
            let err = decode(f, s).unwrap_err();
            assert!(err.to_string().contains("lock_order"), "{why}: {err}");
        }
    }
}
