//! The registry of every Lua script the service runs, and helpers to run them.
//!
//! Each capability module owns its scripts (a `static` [`redis::Script`] built from a file in
//! `lua/` with `include_str!`, so each is hashed once per process); [`all`] is what readiness
//! checks and loads into Redis. Scripts are sent as `EVALSHA`; when Redis answers `NOSCRIPT`
//! (after a restart or failover), the script is loaded and the call repeated once.

use redis::aio::ConnectionLike;
use redis::{Cmd, FromRedisValue, Pipeline, RedisResult, Script, ServerErrorKind};

/// Every script of every module.
pub fn all() -> Vec<&'static Script> {
    let mut all = Vec::new();
    all.extend(crate::drivers::scripts());
    all.extend(crate::search::scripts());
    all.extend(crate::ranking::scripts());
    all.extend(crate::lock::scripts());
    all.extend(crate::dispatch::scripts());
    all.extend(crate::ratelimit::scripts());
    all.extend(crate::auth::scripts());
    all
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
