//! The registry of every Lua script the service runs (the files in `lua/`, each headed by its
//! KEYS and ARGV), and the helpers that run them.
//!
//! Each script is a `static` [`redis::Script`] built with `include_str!`, so it is hashed once
//! per process; [`all`] is what readiness checks and loads into Redis. Scripts are sent as
//! `EVALSHA`; when Redis answers `NOSCRIPT` (after a restart or failover), the script is loaded
//! and the call repeated once.

use std::sync::LazyLock;

use redis::aio::ConnectionLike;
use redis::{Cmd, FromRedisValue, Pipeline, RedisResult, Script, ServerErrorKind};

macro_rules! scripts {
    ($($(#[$doc:meta])* $name:ident = $file:literal;)*) => {
        $(
            $(#[$doc])*
            pub static $name: LazyLock<Script> =
                LazyLock::new(|| Script::new(include_str!(concat!("../../lua/", $file))));
        )*

        /// Every script, for readiness (`SCRIPT EXISTS`, then `SCRIPT LOAD` of the missing).
        pub fn all() -> Vec<&'static Script> {
            vec![$(&$name),*]
        }
    };
}

scripts! {
    /// Store a position: stale and future checks, state, liveness bucket, GEO set per status.
    SET_POSITION = "set_position.lua";
    /// A driver's shift status (available/offline), moving it between GEO sets.
    SET_STATUS = "set_status.lua";
    /// Delete a driver from every index of its city (refused while it is busy).
    DELETE_DRIVER = "delete_driver.lua";
    /// Compare-and-set of a driver's directory entry (which city holds its state).
    CITY_CAS = "driver_city_cas.lua";
    /// Drop drivers whose last position is older than the TTL from the GEO sets.
    SWEEP_STALE = "sweep_stale.lua";
    /// Set or increment a driver's score, keeping the leaderboard.
    SET_SCORE = "set_score.lua";
    /// A driver's rank and the drivers around it on the leaderboard.
    RANK_AROUND = "rank_around.lua";
    /// Take a lock (`SET NX PX`) and draw its fencing number.
    ACQUIRE_LOCK = "acquire_lock.lua";
    /// Release a lock only if the caller's token still holds it.
    RELEASE_LOCK = "release_lock.lua";
    /// Extend a lock only if the caller's token still holds it.
    EXTEND_LOCK = "extend_lock.lua";
    /// Take an order's dispatch lock and draw its fencing number.
    LOCK_ORDER = "lock_order.lua";
    /// Offer an order to a driver: lock token, fence, order pending, driver available and fresh.
    CLAIM_OFFER = "claim_offer.lua";
    /// Every transition of an order after its offer (accept, reject, expire, pickup, deliver,
    /// cancel, fail), with the fencing check.
    ORDER_TRANSITION = "order_transition.lua";
    /// Fixed-window rate limit.
    RATE_FIXED_WINDOW = "rate_fixed_window.lua";
    /// Sliding-log rate limit.
    RATE_SLIDING_LOG = "rate_sliding_log.lua";
    /// Token-bucket rate limit.
    RATE_TOKEN_BUCKET = "rate_token_bucket.lua";
    /// Check and extend a driver session (sliding and absolute expiry).
    TOUCH_SESSION = "touch_session.lua";
}

/// An `EVALSHA` command for `script` with `keys` and `args`.
pub fn evalsha<K: redis::ToRedisArgs, A: redis::ToRedisArgs>(
    script: &Script,
    keys: &[K],
    args: &[A],
) -> Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash())
        .arg(keys.len())
        .arg(keys)
        .arg(args);
    cmd
}

fn is_noscript(err: &redis::RedisError) -> bool {
    err.kind() == redis::ErrorKind::Server(ServerErrorKind::NoScript)
}

/// Run one `EVALSHA` built by [`evalsha`], loading the script on `NOSCRIPT`.
pub async fn run<T: FromRedisValue>(
    conn: &mut impl ConnectionLike,
    script: &Script,
    cmd: &Cmd,
) -> RedisResult<T> {
    match cmd.query_async(conn).await {
        Err(err) if is_noscript(&err) => {
            script.prepare_invoke().load_async(conn).await?;
            cmd.query_async(conn).await
        }
        other => other,
    }
}

/// Run a pipeline made only of `EVALSHA`s of `script`, loading it on `NOSCRIPT`. Safe to
/// repeat: when the script is missing none of the pipeline's commands ran.
pub async fn run_pipeline<T: FromRedisValue>(
    conn: &mut impl ConnectionLike,
    script: &Script,
    pipe: &Pipeline,
) -> RedisResult<T> {
    match pipe.query_async(conn).await {
        Err(err) if is_noscript(&err) => {
            script.prepare_invoke().load_async(conn).await?;
            pipe.query_async(conn).await
        }
        other => other,
    }
}

/// Epoch milliseconds from a `TIME` reply.
pub fn time_ms((secs, micros): (i64, i64)) -> i64 {
    secs * 1000 + micros / 1000
}
