//! Distributed locks on Redis: `SET key token NX PX ttl` with a random token, Lua
//! compare-and-delete release, Lua compare-and-pexpire extension, a renewal watchdog, and a
//! fencing number drawn atomically with each acquisition.
//!
//! A lock alone cannot keep work safe: a holder paused past its TTL (GC, SIGSTOP, a slow
//! network) wakes up believing it still holds the lock. The fencing number, which strictly
//! increases per counter, lets the store itself refuse such a late write: dispatch records the
//! number with the order and every transition checks it. Lock and counter keys must
//! share a hash tag (e.g. the city) so both scripts stay in one Cluster slot.

pub mod redlock;
pub(crate) mod scripts;

use crate::store::scripts::{ACQUIRE_LOCK, EXTEND_LOCK, RELEASE_LOCK};
use std::time::Duration;

use tokio::sync::watch;

use self::scripts::{AcquireLockArgs, AcquireReply, ExtendLockArgs, ExtendReply};
use self::scripts::{ReleaseLockArgs, ReleaseReply};
use crate::store::Store;
use crate::store::scripts::{self as store_scripts, evalsha};

/// `SET key token NX PX ttl`: take `key` for `ttl` unless someone holds it; `true` when taken.
/// (The single-node dispatch lock draws a fencing number in the same step, `acquire_lock.lua`;
/// this plain form serves leases that need none, and Redlock's per-node step.)
pub(crate) async fn take(
    conn: &mut impl redis::aio::ConnectionLike,
    key: &str,
    token: &str,
    ttl: Duration,
) -> redis::RedisResult<bool> {
    let set: Option<String> = redis::cmd("SET")
        .arg(key)
        .arg(token)
        .arg("NX")
        .arg("PX")
        .arg(ttl.as_millis().max(1) as u64)
        .query_async(conn)
        .await?;
    Ok(set.is_some())
}

/// Delete `key` only while it holds `token` (`lua/release_lock.lua`); `true` when released.
pub(crate) async fn release_token(
    conn: &mut impl redis::aio::ConnectionLike,
    key: &str,
    token: &str,
) -> redis::RedisResult<bool> {
    let args = ReleaseLockArgs { token };
    let cmd = evalsha(&RELEASE_LOCK, &[key], &args.argv());
    let reply = ReleaseReply::decode(store_scripts::run(conn, &RELEASE_LOCK, &cmd).await?)?;
    Ok(reply == ReleaseReply::Released)
}

/// A held lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The lock key.
    pub key: String,
    /// This holder's random token (128 random bits, UUID v4).
    pub token: String,
    /// The fencing number drawn with this acquisition (strictly increasing per counter).
    pub fencing: u64,
    /// The lease's time to live.
    pub(crate) ttl: Duration,
}

/// Locks over one Redis (see the module docs).
#[derive(Clone)]
pub struct Locks {
    store: Store,
}

impl Locks {
    /// Locks using `store`'s shared connection.
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Try once to take `key` for `ttl`, drawing a fencing number from `fence_key`. Answers
    /// `None` at once when someone else holds it (never waits).
    pub async fn acquire(
        &self,
        key: &str,
        fence_key: &str,
        ttl: Duration,
    ) -> redis::RedisResult<Option<Lease>> {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let ttl_ms = ttl.as_millis().max(1) as u64;
        let args = AcquireLockArgs {
            token: &token,
            ttl_ms,
        };
        let cmd = evalsha(&ACQUIRE_LOCK, &[key, fence_key], &args.argv());
        let reply = store_scripts::run(&mut self.store.conn(), &ACQUIRE_LOCK, &cmd).await?;
        Ok(match AcquireReply::decode(reply)? {
            AcquireReply::Acquired(fencing) => Some(Lease {
                key: key.to_owned(),
                token,
                fencing,
                ttl,
            }),
            AcquireReply::Held => None,
        })
    }

    /// Release `lease` if it is still held by it; `false` when it had expired (and perhaps been
    /// taken by another holder, whose lock is left alone).
    pub async fn release(&self, lease: &Lease) -> redis::RedisResult<bool> {
        release_token(&mut self.store.conn(), &lease.key, &lease.token).await
    }

    /// Extend `lease` to `ttl` from now if it is still held by it; `false` when it is lost.
    pub async fn extend(&self, lease: &Lease, ttl: Duration) -> redis::RedisResult<bool> {
        let args = ExtendLockArgs {
            token: &lease.token,
            ttl_ms: ttl.as_millis().max(1) as u64,
        };
        let cmd = evalsha(&EXTEND_LOCK, &[&lease.key], &args.argv());
        let reply = store_scripts::run(&mut self.store.conn(), &EXTEND_LOCK, &cmd).await?;
        Ok(ExtendReply::decode(reply)? == ExtendReply::Extended)
    }

    /// Keep `lease` alive while work runs: extends it every `ttl / 3`. The returned guard stops
    /// renewing when dropped; [`Renewal::lost`] reports when an extension found the lease gone
    /// (or Redis unreachable for longer than the TTL), after which the work must stop.
    pub fn keep_alive(&self, lease: Lease) -> Renewal {
        let (lost_tx, lost_rx) = watch::channel(false);
        let locks = self.clone();
        let task = tokio::spawn(async move {
            let period = lease.ttl / 3;
            let mut last_ok = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(period).await;
                match locks.extend(&lease, lease.ttl).await {
                    Ok(true) => last_ok = tokio::time::Instant::now(),
                    Ok(false) => {
                        crate::metrics::inc("geodispatch_lock_lost_total", &[("stage", "renewal")]);
                        tracing::warn!(key = %lease.key, fencing = lease.fencing, "lease lost: found expired at renewal");
                        break;
                    }
                    Err(err) => {
                        tracing::warn!(key = %lease.key, error = %err, "lease extension failed");
                        if last_ok.elapsed() >= lease.ttl {
                            break;
                        }
                    }
                }
            }
            let _ = lost_tx.send(true);
        });
        Renewal {
            task,
            lost: lost_rx,
        }
    }
}

/// A running renewal watchdog; renewal stops when this is dropped.
#[derive(Debug)]
pub struct Renewal {
    task: tokio::task::JoinHandle<()>,
    lost: watch::Receiver<bool>,
}

impl Renewal {
    /// Whether the lease has been lost.
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Resolves when the lease is lost.
    pub async fn lost(&mut self) {
        let _ = self.lost.wait_for(|lost| *lost).await;
    }
}

impl Drop for Renewal {
    fn drop(&mut self) {
        self.task.abort();
    }
}
