//! The registry of every Lua script the service runs (the files in `lua/`, each headed by its
//! KEYS and ARGV), and the helpers that run them.
//!
//! Each script is a `static` [`redis::Script`] built with `include_str!`, so it is hashed once
//! per process; [`all`] is what readiness checks and loads into Redis. Scripts are sent as
//! `EVALSHA`; when Redis answers `NOSCRIPT` (after a restart or failover), the script is loaded
//! and the call repeated once.
//!
//! What several scripts share is written once, in the prelude parts of `lua/prelude/` (each
//! headed by what it defines): `clock` (Redis' time in ms), `codes` (status and vehicle codes,
//! the packed driver state, GEO member tags) and `buckets` (the liveness bucket index). A
//! script lists the parts it uses; they are joined before its own text at compile time, so
//! Redis runs one self-contained script (`EVALSHA` still sends only the hash). A part only
//! defines top-level `local`s, never returns, and defines no name a script defines (a test
//! below checks it); Redis reports line numbers of the joined text.

use std::sync::LazyLock;

use redis::aio::ConnectionLike;
use redis::{Cmd, FromRedisValue, Pipeline, RedisResult, Script, ServerErrorKind};

macro_rules! scripts {
    // A script's text: its prelude parts, then its file.
    (@text [$($part:ident),*] $file:literal) => {
        concat!(
            $(include_str!(concat!("../../lua/prelude/", stringify!($part), ".lua")),)*
            include_str!(concat!("../../lua/", $file))
        )
    };
    ($($(#[$doc:meta])* $name:ident = [$($part:ident),*] $file:literal;)*) => {
        $(
            $(#[$doc])*
            pub(crate) static $name: LazyLock<Script> =
                LazyLock::new(|| Script::new(scripts!(@text [$($part),*] $file)));
        )*

        /// Every script, for readiness (`SCRIPT EXISTS`, then `SCRIPT LOAD` of the missing).
        pub(crate) fn all() -> Vec<&'static Script> {
            vec![$(&$name),*]
        }

        /// Every script as `(file, prelude parts, joined text)`, in the order of [`all`].
        #[cfg(test)]
        const SOURCES: &[(&str, &[&str], &str)] = &[$(
            ($file, &[$(stringify!($part)),*], scripts!(@text [$($part),*] $file))
        ),*];
    };
}

scripts! {
    /// Store a position: stale and future checks, state, liveness bucket, GEO set per status.
    SET_POSITION = [clock, codes, buckets] "set_position.lua";
    /// A driver's shift status (available/offline), moving it between GEO sets.
    SET_STATUS = [clock, codes] "set_status.lua";
    /// Delete a driver from every index of its city (refused while it is busy).
    DELETE_DRIVER = [codes, buckets] "delete_driver.lua";
    /// Compare-and-set of a driver's directory entry (which city holds its state).
    CITY_CAS = [] "driver_city_cas.lua";
    /// Drop drivers whose last position is older than the TTL from the GEO sets.
    SWEEP_STALE = [clock, codes, buckets] "sweep_stale.lua";
    /// Set or increment a driver's score, keeping the leaderboard.
    SET_SCORE = [] "set_score.lua";
    /// A driver's rank and the drivers around it on the leaderboard.
    RANK_AROUND = [] "rank_around.lua";
    /// Take a lock (`SET NX PX`) and draw its fencing number.
    ACQUIRE_LOCK = [] "acquire_lock.lua";
    /// Release a lock only if the caller's token still holds it.
    RELEASE_LOCK = [] "release_lock.lua";
    /// Extend a lock only if the caller's token still holds it.
    EXTEND_LOCK = [] "extend_lock.lua";
    /// Take an order's dispatch lock and draw its fencing number.
    LOCK_ORDER = [] "lock_order.lua";
    /// Offer an order to a driver: lock token, fence, order pending, driver available and fresh.
    CLAIM_OFFER = [clock, codes] "claim_offer.lua";
    /// Every transition of an order after its offer (accept, reject, expire, pickup, deliver,
    /// cancel, fail), with the fencing check.
    ORDER_TRANSITION = [clock, codes] "order_transition.lua";
    /// Send an idle driver toward a pickup spot: driver available, fresh and free; the
    /// instruction recorded and a `driver.reposition` event appended.
    REPOSITION = [clock, codes] "reposition.lua";
    /// Fixed-window rate limit.
    RATE_FIXED_WINDOW = [] "rate_fixed_window.lua";
    /// Sliding-log rate limit.
    RATE_SLIDING_LOG = [clock] "rate_sliding_log.lua";
    /// Token-bucket rate limit.
    RATE_TOKEN_BUCKET = [clock] "rate_token_bucket.lua";
    /// Check and extend a driver session (sliding and absolute expiry).
    TOUCH_SESSION = [clock] "touch_session.lua";
    /// Change a webhook endpoint's event types or state (re-arming its lanes when enabled).
    WEBHOOK_PATCH = [clock] "webhook_patch.lua";
    /// Queue order events for the webhook endpoints that want them, moving the city's cursor.
    WEBHOOK_FANOUT = [clock] "webhook_fanout.lua";
    /// Take the webhook lane due longest, under a lease.
    WEBHOOK_CLAIM = [clock] "webhook_claim.lua";
    /// Record the end of one webhook attempt (delivered, retry, dead letter, disable).
    WEBHOOK_SETTLE = [clock] "webhook_settle.lua";
}

/// An `EVALSHA` command for `script` with `keys` and `args`.
pub(crate) fn evalsha<K: redis::ToRedisArgs, A: redis::ToRedisArgs>(
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
pub(crate) async fn run<T: FromRedisValue>(
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
pub(crate) async fn run_pipeline<T: FromRedisValue>(
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
pub(crate) fn time_ms((secs, micros): (i64, i64)) -> i64 {
    secs * 1000 + micros / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names a chunk of Lua declares with `local` at its top level (lines not indented).
    fn top_level_locals(lua: &str) -> Vec<String> {
        lua.lines()
            .filter_map(|line| line.strip_prefix("local "))
            .flat_map(|rest| {
                let rest = rest.strip_prefix("function ").unwrap_or(rest);
                let names = rest.split(['=', '(']).next().unwrap_or_default();
                names
                    .split(',')
                    .map(|n| n.trim().to_owned())
                    .collect::<Vec<_>>()
            })
            .filter(|n| !n.is_empty())
            .collect()
    }

    /// Every name a script declares with `local`, at any depth.
    fn all_locals(lua: &str) -> Vec<String> {
        top_level_locals(
            &lua.lines()
                .map(str::trim_start)
                .collect::<Vec<_>>()
                .join("\n"),
        )
    }

    fn part_text(part: &str) -> String {
        let path = format!("{}/lua/prelude/{part}.lua", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn script_text(file: &str) -> String {
        let path = format!("{}/lua/{file}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn prelude_parts_only_define_names_no_script_redefines() {
        let parts = ["clock", "codes", "buckets"];
        let mut defined: Vec<(String, &str)> = Vec::new();
        for part in parts {
            let text = part_text(part);
            assert!(
                text.starts_with(&format!("-- prelude/{part}.lua")),
                "{part}: a part opens with a header saying what it defines"
            );
            assert!(
                text.ends_with('\n'),
                "{part}: ends with a newline, so the next part starts on its own line"
            );
            assert!(
                !text.lines().any(|l| l.starts_with("return")),
                "{part}: a top-level return would end every script it is joined to"
            );
            for name in top_level_locals(&text) {
                assert!(
                    text.contains(&format!("--   {name}")),
                    "{part}: its header lists {name}"
                );
                if let Some((_, other)) = defined.iter().find(|(n, _)| *n == name) {
                    panic!("{name} is defined by both {other} and {part}");
                }
                defined.push((name, part));
            }
        }
        assert!(defined.iter().any(|(n, _)| n == "now_ms"));
        for (file, used, _) in SOURCES {
            let text = script_text(file);
            assert!(
                text.starts_with(&format!("-- {file}:")),
                "{file}: a script opens with its own header"
            );
            for name in all_locals(&text) {
                if let Some((_, part)) = defined.iter().find(|(n, _)| *n == name) {
                    panic!("{file} declares {name}, which prelude part {part} defines");
                }
            }
            // A script uses a prelude name only when it lists the part that defines it.
            for (name, part) in &defined {
                let uses = text.contains(&format!("{name}("))
                    || text.contains(&format!("{name}["))
                    || text.contains(&format!("{name}."));
                assert!(
                    !uses || used.contains(part),
                    "{file} uses {name} without the prelude part {part}"
                );
            }
        }
    }

    #[test]
    fn every_script_is_its_prelude_parts_then_its_file_and_stays_far_below_the_local_limit() {
        assert_eq!(SOURCES.len(), all().len());
        for ((file, parts, joined), script) in SOURCES.iter().zip(all()) {
            let mut expected: String = parts.iter().map(|p| part_text(p)).collect();
            expected.push_str(&script_text(file));
            assert_eq!(*joined, expected, "{file}");
            assert_eq!(script.get_hash(), Script::new(joined).get_hash(), "{file}");
            // Lua allows 200 locals active at once in a function (the chunk is one).
            let locals = top_level_locals(joined).len();
            assert!(locals < 100, "{file}: {locals} top-level locals");
        }
    }

    #[tokio::test]
    async fn every_joined_script_compiles_in_redis() {
        let dir = std::env::temp_dir().join(format!("gd-scripts-{}", uuid::Uuid::new_v4()));
        let mut server =
            crate::store::local::LocalRedis::start(crate::store::local::LocalRedisOptions {
                data_dir: dir,
                appendonly: false,
                extra_args: Vec::new(),
            })
            .await
            .expect("starting redis-server");
        let client = redis::Client::open(server.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        for ((file, _, joined), script) in SOURCES.iter().zip(all()) {
            let sha: String = redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(*joined)
                .query_async(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("{file} does not compile: {e}"));
            assert_eq!(sha, script.get_hash(), "{file}");
        }
        // The clock part, alone: Redis' TIME in milliseconds.
        let clock = format!("{}return now_ms()", part_text("clock"));
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let ms: i64 = redis::cmd("EVAL")
            .arg(&clock)
            .arg(0)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!((ms - before).abs() < 5_000, "{ms} vs {before}");
        server.stop().await.unwrap();
    }
}
