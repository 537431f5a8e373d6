//! Redlock: one lock over N independent Redis nodes (3 or 5, no replication between them), so
//! that the lock survives the loss of a minority of them.
//!
//! Acquire: the same random token is `SET key token NX PX ttl` on every node in parallel, each
//! bounded by a per-node timeout far below the TTL. The lock is held when a majority
//! (`N/2 + 1`) answered OK and time is left: validity = TTL − time spent acquiring − clock
//! drift (1 % of the TTL + 2 ms). Otherwise it is released on every node at once (so a failed
//! attempt blocks nobody) and retried after a random delay. Release and extend run the same
//! compare-and-delete / compare-and-pexpire scripts as the single-node lock on every node.
//!
//! What Redlock does not give (Kleppmann, "How to do distributed locking", 2016): it assumes
//! bounded pauses, network delay and clock drift. A holder paused past its validity (GC,
//! SIGSTOP), or a node whose clock jumps, lets two holders believe they hold the lock; and it
//! produces no fencing token. geodispatch therefore never relies on the lock for safety: the
//! fencing number comes from the data Redis (`INCR` per city) and the order's own script
//! refuses a stale or second assignment (`lua/claim_offer.lua`); see `docs/RELIABILITY.md`.

use crate::store::scripts::EXTEND_LOCK;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::scripts::{ExtendLockArgs, ExtendReply};
use crate::store::scripts::{self, evalsha};

/// A lock held on a majority of the nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedlockLease {
    /// The lock key (the same on every node).
    pub(crate) key: String,
    /// This holder's random token.
    pub token: String,
    /// How long the lock is safe to use, counted from `acquired_at`.
    pub validity: Duration,
    /// When acquiring finished.
    pub(crate) acquired_at: Instant,
    /// Nodes that answered OK.
    pub nodes_locked: usize,
}

/// A Redlock client over independent nodes.
#[derive(Clone)]
pub struct Redlock {
    nodes: Vec<ConnectionManager>,
    node_timeout: Duration,
    retries: usize,
}

impl Redlock {
    /// Connect (lazily) to `urls`, one per independent node. `node_timeout` bounds each node's
    /// answer (keep it a small fraction of the lock TTLs used); `retries` extra attempts are
    /// made after a failed one.
    pub fn new(urls: &[String], node_timeout: Duration, retries: usize) -> anyhow::Result<Self> {
        anyhow::ensure!(
            urls.len() >= 3,
            "Redlock needs at least 3 independent nodes, got {}",
            urls.len()
        );
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(node_timeout))
            .set_connection_timeout(Some(node_timeout))
            .set_number_of_retries(0)
            .set_max_delay(Duration::from_millis(100));
        let nodes = urls
            .iter()
            .map(|u| {
                let client = redis::Client::open(u.as_str())?;
                Ok(ConnectionManager::new_lazy_with_config(
                    client,
                    config.clone(),
                )?)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            nodes,
            node_timeout,
            retries,
        })
    }

    /// Nodes needed for a majority.
    pub fn quorum(&self) -> usize {
        self.nodes.len() / 2 + 1
    }

    async fn on_every_node<F, Fut, T>(&self, f: F) -> Vec<Option<T>>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        join_all(self.nodes.iter().cloned().map(|conn| {
            let call = f(conn);
            async move {
                match tokio::time::timeout(self.node_timeout, call).await {
                    Ok(Ok(v)) => Some(v),
                    _ => None,
                }
            }
        }))
        .await
    }

    /// Try to take `key` for `ttl` on a majority. `Ok(None)` when it is held elsewhere,
    /// `Err(reachable)` when fewer nodes than a majority answered, after the configured
    /// retries.
    pub async fn try_acquire(
        &self,
        key: &str,
        ttl: Duration,
    ) -> Result<Option<RedlockLease>, usize> {
        let mut reachable = 0;
        for attempt in 0..=self.retries {
            let token = uuid::Uuid::new_v4().simple().to_string();
            let start = Instant::now();
            let answers = self
                .on_every_node(|mut conn| {
                    let (key, token) = (key.to_owned(), token.clone());
                    async move { super::take(&mut conn, &key, &token, ttl).await }
                })
                .await;
            let locked = answers.iter().filter(|a| **a == Some(true)).count();
            reachable = answers.iter().filter(|a| a.is_some()).count();
            let drift = ttl / 100 + Duration::from_millis(2);
            let validity = ttl.saturating_sub(start.elapsed() + drift);
            if locked >= self.quorum() && !validity.is_zero() {
                return Ok(Some(RedlockLease {
                    key: key.to_owned(),
                    token,
                    validity,
                    acquired_at: Instant::now(),
                    nodes_locked: locked,
                }));
            }
            // Not held: undo the partial lock everywhere (a node may have set it even if its
            // answer was lost), then back off a random fraction of the TTL.
            self.release_token(key, &token).await;
            if attempt < self.retries {
                let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0]) % 50;
                tokio::time::sleep(Duration::from_millis(jitter + 10).min(ttl / 2)).await;
            }
        }
        if reachable < self.quorum() {
            Err(reachable)
        } else {
            Ok(None)
        }
    }

    /// [`try_acquire`](Self::try_acquire), `None` for any failure.
    pub async fn acquire(&self, key: &str, ttl: Duration) -> Option<RedlockLease> {
        self.try_acquire(key, ttl).await.ok().flatten()
    }

    async fn release_token(&self, key: &str, token: &str) -> usize {
        self.on_every_node(|mut conn| {
            let (key, token) = (key.to_owned(), token.to_owned());
            async move { super::release_token(&mut conn, &key, &token).await }
        })
        .await
        .iter()
        .filter(|a| **a == Some(true))
        .count()
    }

    /// Release `lease` on every node (compare-and-delete); returns on how many it was still
    /// held.
    pub async fn release(&self, lease: &RedlockLease) -> usize {
        self.release_token(&lease.key, &lease.token).await
    }

    /// Extend `lease` to `ttl` from now on every node still holding it (compare-and-pexpire).
    /// `Some(new lease)` when a majority extended it with validity left.
    pub async fn extend(&self, lease: &RedlockLease, ttl: Duration) -> Option<RedlockLease> {
        let start = Instant::now();
        let args = ExtendLockArgs {
            token: &lease.token,
            ttl_ms: ttl.as_millis().max(1) as u64,
        };
        let cmd = evalsha(&EXTEND_LOCK, &[&lease.key], &args.argv());
        let extended = self
            .on_every_node(|mut conn| {
                let cmd = cmd.clone();
                async move {
                    let reply = scripts::run(&mut conn, &EXTEND_LOCK, &cmd).await?;
                    ExtendReply::decode(reply)
                }
            })
            .await
            .iter()
            .filter(|a| **a == Some(ExtendReply::Extended))
            .count();
        let drift = ttl / 100 + Duration::from_millis(2);
        let validity = ttl.saturating_sub(start.elapsed() + drift);
        (extended >= self.quorum() && !validity.is_zero()).then(|| RedlockLease {
            validity,
            acquired_at: Instant::now(),
            nodes_locked: extended,
            ..lease.clone()
        })
    }
}
