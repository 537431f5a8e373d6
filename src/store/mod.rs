//! The service's handle on Redis: one shared multiplexed connection for the request path, a
//! deadpool pool for work that needs a connection of its own, the key prefix, and the script
//! registry that readiness checks.
//!
//! Three topologies ([`Topology`]): a standalone Redis (`redis_url`), a primary found through
//! Redis Sentinel (`redis_sentinels`), or a Redis Cluster (`redis_cluster_nodes`). The request
//! path sees one [`RedisConn`] in every case. In Cluster mode every command, script and
//! pipeline must stay in one hash slot: every key of a city carries the `{city}` hash tag
//! ([`Keys::city`]) and [`check_slots`] proves, at startup, that each script's keys share one.
//!
//! Why two kinds of connection: a deadpool checkout sends `UNWATCH` + `PING` before handing the
//! connection out, an extra round trip per request (measured: 19k req/s through the pool versus
//! 52k on one shared multiplexed connection). Request handlers therefore use
//! [`Store::conn`], a `ConnectionManager` that pipelines its callers' commands on one socket
//! and reconnects by itself (on a standalone Redis, one per HTTP worker thread). Blocking
//! reads (streams, pub/sub) and bulk loads, which would stall or hog a shared socket, check a
//! dedicated connection out of [`Store::pool`].

pub mod keys;
pub mod local;
pub(crate) mod scripts;

pub use keys::Keys;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

/// Where Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topology {
    /// One Redis server (`redis://…` or `rediss://…`).
    Standalone(String),
    /// A primary and its replicas watched by Redis Sentinel: the sentinels' URLs and the
    /// monitored primary's name.
    Sentinel {
        /// `redis://host:port` of each sentinel.
        sentinels: Vec<String>,
        /// Name of the monitored primary (`sentinel monitor <name> …`).
        master: String,
    },
    /// A Redis Cluster: seed nodes (`redis://host:port`); the rest is discovered.
    Cluster(Vec<String>),
}

/// Split a comma-separated list of `host:port` (or URLs) into `redis://` URLs.
pub fn url_list(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            if s.contains("://") {
                s.to_owned()
            } else {
                format!("redis://{s}")
            }
        })
        .collect()
}

impl Topology {
    /// The topology the settings name: Cluster when `redis_cluster_nodes` is set, Sentinel when
    /// `redis_sentinels` is, else the standalone Redis at `url`.
    pub(crate) fn from_settings(settings: &crate::config::Settings, url: &str) -> Self {
        if let Some(nodes) = settings.redis_cluster_nodes.as_deref() {
            Topology::Cluster(url_list(nodes))
        } else if let Some(sentinels) = settings.redis_sentinels.as_deref() {
            Topology::Sentinel {
                sentinels: url_list(sentinels),
                master: settings.redis_sentinel_master.clone(),
            }
        } else {
            Topology::Standalone(url.to_owned())
        }
    }
}

/// Does this error mean the connection is unusable (so a fresh one should be made)? Includes
/// `READONLY`: after a Sentinel failover the old primary comes back as a replica.
pub(crate) fn is_connection_error(err: &redis::RedisError) -> bool {
    err.is_io_error()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.is_timeout()
        || err.is_unrecoverable_error()
        || err.code() == Some("READONLY")
}

type Connect<C> = Box<dyn Fn() -> BoxFuture<'static, RedisResult<C>> + Send + Sync>;

/// A multiplexed connection made on first use and made again after it fails.
pub(crate) struct Reconnecting<C> {
    connect: Connect<C>,
    current: std::sync::Mutex<Option<(u64, C)>>,
    connecting: tokio::sync::Mutex<()>,
    last_failure: std::sync::Mutex<Option<std::time::Instant>>,
    generation: AtomicU64,
    timeout: Duration,
    /// Drop the connection on connection errors (Sentinel); a cluster connection heals itself.
    drop_on_error: bool,
}

impl<C: Clone> Reconnecting<C> {
    fn new(connect: Connect<C>, timeout: Duration, drop_on_error: bool) -> Self {
        Self {
            connect,
            current: std::sync::Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            last_failure: std::sync::Mutex::new(None),
            generation: AtomicU64::new(0),
            timeout,
            drop_on_error,
        }
    }

    fn cached(&self) -> Option<(u64, C)> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn get(&self) -> RedisResult<(u64, C)> {
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        // Callers that queued behind a failed attempt fail at once rather than each trying
        // again: at most one connection attempt per 100 ms.
        let recent_failure = self
            .last_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| t.elapsed() < Duration::from_millis(100));
        if recent_failure {
            return Err(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "Redis was unreachable a moment ago",
            )));
        }
        let attempt = tokio::time::timeout(self.timeout, (self.connect)())
            .await
            .map_err(|_| {
                redis::RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connecting to Redis timed out",
                ))
            })
            .and_then(|r| r);
        let conn = match attempt {
            Ok(c) => c,
            Err(e) => {
                *self.last_failure.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(std::time::Instant::now());
                return Err(e);
            }
        };
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some((generation, conn.clone()));
        Ok((generation, conn))
    }

    fn check<T>(&self, generation: u64, result: &RedisResult<T>) {
        if let Err(err) = result
            && self.drop_on_error
            && is_connection_error(err)
        {
            let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
            if current.as_ref().map(|(g, _)| *g) == Some(generation) {
                tracing::warn!(error = %err, "Redis connection failed; the next command reconnects");
                *current = None;
            }
        }
    }
}

/// The connection request handlers use (cheap to clone; every clone shares one socket per
/// node): a `ConnectionManager` on a standalone Redis, the current primary's multiplexed
/// connection under Sentinel (re-resolved through the sentinels after a failure), or a
/// cluster connection (which follows MOVED/ASK redirections and topology changes itself).
#[derive(Clone)]
pub(crate) enum RedisConn {
    /// Standalone.
    Single(ConnectionManager),
    /// Sentinel.
    Sentinel(Arc<Reconnecting<MultiplexedConnection>>),
    /// Cluster.
    Cluster(Arc<Reconnecting<ClusterConnection>>),
}

impl RedisConn {
    /// Which connection writes go through now: under Sentinel, a number that changes with every
    /// reconnection (0 before the first); elsewhere always 0. `WAIT` only covers the writes of
    /// its own connection, so a write acknowledged through `WAIT` must not have crossed a
    /// reconnection ([`Store::wait_replicas`]).
    pub(crate) fn generation(&self) -> u64 {
        match self {
            RedisConn::Sentinel(s) => s.cached().map_or(0, |(g, _)| g),
            _ => 0,
        }
    }
}

impl<C: ConnectionLike + Clone + Send + 'static> Reconnecting<C> {
    /// Send `cmd` on the current connection (connecting first if needed).
    fn send<'a>(&'a self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        async move {
            let (generation, mut c) = self.get().await?;
            let result = c.req_packed_command(cmd).await;
            self.check(generation, &result);
            result
        }
        .boxed()
    }

    /// Send a pipeline on the current connection (connecting first if needed).
    fn send_pipeline<'a>(
        &'a self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        async move {
            let (generation, mut c) = self.get().await?;
            let result = c.req_packed_commands(cmd, offset, count).await;
            self.check(generation, &result);
            result
        }
        .boxed()
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(c) => c.req_packed_command(cmd),
            RedisConn::Sentinel(s) => s.send(cmd),
            RedisConn::Cluster(s) => s.send(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Single(c) => c.req_packed_commands(cmd, offset, count),
            RedisConn::Sentinel(s) => s.send_pipeline(cmd, offset, count),
            RedisConn::Cluster(s) => s.send_pipeline(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
            _ => 0,
        }
    }
}

/// Why a write was not acknowledged by [`Store::wait_replicas`].
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    /// Fewer replicas than required confirmed the write in time, or the connection changed
    /// since it was sent: the write stands but must not be acknowledged.
    #[error("{0}")]
    NotAcknowledged(String),
    /// `WAIT` itself failed.
    #[error("WAIT failed")]
    Redis(#[source] redis::RedisError),
}

/// Dedicated connections (blocking reads, bulk loads), one pool per topology.
#[derive(Clone)]
pub(crate) enum RedisPool {
    /// Standalone.
    Single(deadpool_redis::Pool),
    /// Sentinel (connections to the current primary).
    Sentinel(deadpool_redis::sentinel::Pool),
    /// Cluster.
    Cluster(deadpool_redis::cluster::Pool),
}

/// A connection checked out of a [`RedisPool`].
pub(crate) enum PooledConn {
    /// Standalone.
    Single(deadpool_redis::Connection),
    /// Sentinel.
    Sentinel(deadpool_redis::sentinel::Connection),
    /// Cluster.
    Cluster(deadpool_redis::cluster::Connection),
}

impl RedisPool {
    /// Check a connection out.
    pub(crate) async fn get(&self) -> anyhow::Result<PooledConn> {
        Ok(match self {
            RedisPool::Single(p) => PooledConn::Single(p.get().await?),
            RedisPool::Sentinel(p) => PooledConn::Sentinel(p.get().await?),
            RedisPool::Cluster(p) => PooledConn::Cluster(p.get().await?),
        })
    }

    /// Pool size and idle connections.
    pub(crate) fn status(&self) -> deadpool_redis::Status {
        match self {
            RedisPool::Single(p) => p.status(),
            RedisPool::Sentinel(p) => p.status(),
            RedisPool::Cluster(p) => p.status(),
        }
    }
}

impl PooledConn {
    /// Take the connection out of the pool for good (it is dropped, not reused): after a
    /// timeout or a connection error its state is unknown.
    pub(crate) fn discard(self) {
        match self {
            PooledConn::Single(c) => drop(deadpool_redis::Connection::take(c)),
            PooledConn::Sentinel(c) => drop(deadpool_redis::sentinel::Connection::take(c)),
            PooledConn::Cluster(c) => drop(deadpool_redis::cluster::Connection::take(c)),
        }
    }
}

impl ConnectionLike for PooledConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            PooledConn::Single(c) => c.req_packed_command(cmd),
            PooledConn::Sentinel(c) => c.req_packed_command(cmd),
            PooledConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            PooledConn::Single(c) => c.req_packed_commands(cmd, offset, count),
            PooledConn::Sentinel(c) => c.req_packed_commands(cmd, offset, count),
            PooledConn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            PooledConn::Single(c) => c.get_db(),
            PooledConn::Sentinel(c) => c.get_db(),
            PooledConn::Cluster(c) => c.get_db(),
        }
    }
}

/// The Redis Cluster hash slot of `key` (CRC16/XMODEM of its hash tag, mod 16384).
pub fn slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes.iter().position(|&b| b == b'{').and_then(|open| {
        let close = bytes[open + 1..].iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &bytes[open + 1..open + 1 + close])
    });
    crc16(tagged.unwrap_or(bytes)) % 16384
}

/// CRC16/XMODEM, the checksum of Redis Cluster key slots.
pub(crate) fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Check that every key set (a script's KEYS, a pipeline's keys) lies in one hash slot, as
/// Redis Cluster requires; the error names the first set that does not.
pub(crate) fn check_slots(
    sets: impl IntoIterator<Item = (String, Vec<String>)>,
) -> anyhow::Result<()> {
    for (what, keys) in sets {
        if let Some(first) = keys.first() {
            let s = slot(first);
            if let Some(other) = keys.iter().find(|k| slot(k) != s) {
                anyhow::bail!(
                    "{what}: key {first:?} (slot {s}) and key {other:?} (slot {}) are in different Redis Cluster hash slots, so this script would fail with CROSSSLOT; keys of one script must share one {{hash tag}}",
                    slot(other)
                );
            }
        }
    }
    Ok(())
}

fn local_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What a thread needs to open its own connection to a standalone Redis.
struct PerThread {
    /// Tells the stores of one process apart (tests run several).
    id: u64,
    client: redis::Client,
    config: ConnectionManagerConfig,
}

impl PerThread {
    /// A new connection (connects on first use, on the runtime that uses it).
    fn open(&self) -> redis::RedisResult<ConnectionManager> {
        ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone())
    }
}

/// Numbers [`PerThread::id`].
static NEXT_STORE: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread's own connections, one per store ([`Store::conn`]).
    static THREAD_CONNS: std::cell::RefCell<Vec<(u64, RedisConn)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Redis access shared by every handler (cheap to clone).
#[derive(Clone)]
pub struct Store {
    /// Redis' clock minus ours, in ms (`i64::MIN` until first observed).
    clock_offset_ms: Arc<std::sync::atomic::AtomicI64>,
    /// Whether the data's layout was found to be this build's ([`Store::check_layout`]).
    layout_checked: Arc<std::sync::atomic::AtomicBool>,
    conn: RedisConn,
    /// Standalone only: how a thread opens its own connection ([`Store::conn`]).
    per_thread: Option<Arc<PerThread>>,
    pool: RedisPool,
    keys: Keys,
    timeout: Duration,
}

impl Store {
    /// Connect lazily to `topology`: the service starts even while Redis is down, and
    /// readiness reports it until Redis answers.
    /// `pool_size` bounds the dedicated connections (each queue worker holds one, each event
    /// stream another).
    pub fn connect_to(
        topology: &Topology,
        prefix: &str,
        timeout: Duration,
        pool_size: usize,
    ) -> anyhow::Result<Self> {
        let pool_config = deadpool_redis::PoolConfig {
            max_size: pool_size,
            timeouts: deadpool_redis::Timeouts {
                wait: Some(timeout),
                create: Some(timeout),
                recycle: Some(timeout),
            },
            ..Default::default()
        };
        let mut per_thread = None;
        let (conn, pool) = match topology {
            Topology::Standalone(url) => {
                let client = redis::Client::open(url.as_str()).context("invalid Redis URL")?;
                let config = ConnectionManagerConfig::new()
                    .set_response_timeout(Some(timeout))
                    .set_connection_timeout(Some(timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                let opener = PerThread {
                    id: NEXT_STORE.fetch_add(1, Ordering::Relaxed),
                    client,
                    config,
                };
                let conn = opener
                    .open()
                    .context("creating the Redis connection manager")?;
                per_thread = Some(Arc::new(opener));
                // Pool connections serve blocking reads (XREADGROUP/XREAD BLOCK), so they have
                // no response timeout; only connecting is bounded.
                let manager = deadpool_redis::Manager::new_with_config(
                    url.as_str(),
                    redis::AsyncConnectionConfig::new()
                        .set_response_timeout(None)
                        .set_connection_timeout(Some(timeout)),
                )
                .context("invalid Redis URL")?;
                let pool = deadpool_redis::Pool::builder(manager)
                    .config(pool_config)
                    .runtime(deadpool_redis::Runtime::Tokio1)
                    .build()
                    .context("creating the Redis pool")?;
                (RedisConn::Single(conn), RedisPool::Single(pool))
            }
            Topology::Sentinel { sentinels, master } => {
                anyhow::ensure!(!sentinels.is_empty(), "redis_sentinels lists no sentinel");
                let client = redis::sentinel::SentinelClient::build(
                    sentinels.clone(),
                    master.clone(),
                    None,
                    redis::sentinel::SentinelServerType::Master,
                )
                .context("invalid Sentinel addresses")?;
                let client = Arc::new(tokio::sync::Mutex::new(client));
                let config = redis::AsyncConnectionConfig::new()
                    .set_response_timeout(Some(timeout))
                    .set_connection_timeout(Some(timeout));
                let connect: Connect<MultiplexedConnection> = Box::new(move || {
                    let client = client.clone();
                    let config = config.clone();
                    async move {
                        let mut client = client.lock().await;
                        client.get_async_connection_with_config(&config).await
                    }
                    .boxed()
                });
                let manager = deadpool_redis::sentinel::Manager::new(
                    sentinels.clone(),
                    master.clone(),
                    None,
                    deadpool_redis::sentinel::SentinelServerType::Master,
                )
                .context("invalid Sentinel addresses")?;
                let pool = deadpool_redis::sentinel::Pool::builder(manager)
                    .config(pool_config)
                    .runtime(deadpool_redis::Runtime::Tokio1)
                    .build()
                    .context("creating the Redis pool")?;
                (
                    RedisConn::Sentinel(Arc::new(Reconnecting::new(connect, timeout, true))),
                    RedisPool::Sentinel(pool),
                )
            }
            Topology::Cluster(nodes) => {
                anyhow::ensure!(!nodes.is_empty(), "redis_cluster_nodes lists no node");
                let client = redis::cluster::ClusterClient::builder(nodes.clone())
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    // A request may wait through redirections and a topology refresh.
                    .overall_response_timeout(Some(timeout * 4))
                    .build()
                    .context("invalid Cluster node addresses")?;
                let connect: Connect<ClusterConnection> = Box::new(move || {
                    let client = client.clone();
                    async move { client.get_async_connection().await }.boxed()
                });
                let manager = deadpool_redis::cluster::Manager::new(nodes.clone(), false)
                    .context("invalid Cluster node addresses")?;
                let pool = deadpool_redis::cluster::Pool::builder(manager)
                    .config(pool_config)
                    .runtime(deadpool_redis::Runtime::Tokio1)
                    .build()
                    .context("creating the Redis pool")?;
                (
                    RedisConn::Cluster(Arc::new(Reconnecting::new(connect, timeout, false))),
                    RedisPool::Cluster(pool),
                )
            }
        };
        Ok(Self {
            clock_offset_ms: Arc::new(std::sync::atomic::AtomicI64::new(i64::MIN)),
            layout_checked: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            conn,
            per_thread,
            pool,
            keys: Keys::new(prefix),
            timeout,
        })
    }

    /// Wait until `replicas` replicas have every write sent so far on the shared connection
    /// (`WAIT`), at most `timeout`; 0 returns at once. Fewer in time is 503: the write stands
    /// but is not acknowledged (asynchronous replication could lose it on failover). So is a
    /// reconnection since `generation` (read before the writes): `WAIT` on a new connection
    /// would not cover them. `WAIT` holds the shared connection while it waits, so every request
    /// of the instance waits behind it (a replication round trip, at most `timeout`).
    pub(crate) async fn wait_replicas(
        &self,
        replicas: u32,
        timeout: Duration,
        generation: u64,
    ) -> Result<(), ReplicationError> {
        if replicas == 0 {
            return Ok(());
        }
        let unconfirmed = || {
            crate::metrics::inc("geodispatch_writes_not_replicated_total", &[]);
            ReplicationError::NotAcknowledged(
                "the write could not be confirmed on a replica and is not acknowledged; retry (with the same Idempotency-Key for orders)".to_owned(),
            )
        };
        if self.conn.generation() != generation {
            return Err(unconfirmed());
        }
        let acked: u32 = redis::cmd("WAIT")
            .arg(replicas)
            .arg(timeout.as_millis() as u64)
            .query_async(&mut self.conn())
            .await
            .map_err(ReplicationError::Redis)?;
        if self.conn.generation() != generation {
            return Err(unconfirmed());
        }
        if acked < replicas {
            crate::metrics::inc("geodispatch_writes_not_replicated_total", &[]);
            return Err(ReplicationError::NotAcknowledged(format!(
                "the write reached {acked} of {replicas} required replicas in time and is not acknowledged; retry (with the same Idempotency-Key for orders)"
            )));
        }
        Ok(())
    }

    /// The connection for request handlers (clone it; no checkout cost). On a standalone
    /// Redis, a thread that runs a single-threaded runtime (each HTTP worker does) gets a
    /// connection of its own, created on first use: its I/O task then runs on the same thread
    /// as the handlers, so a request costs no wake-up of another thread (one pair of
    /// `bench ingest` runs: 34,190 → 35,359 single PUTs/s). Elsewhere (multi-threaded
    /// runtimes, Sentinel, Cluster) every caller shares one.
    pub(crate) fn conn(&self) -> RedisConn {
        let Some(per_thread) = &self.per_thread else {
            return self.conn.clone();
        };
        let single_threaded = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread);
        if !single_threaded {
            return self.conn.clone();
        }
        THREAD_CONNS.with(|conns| {
            let mut conns = conns.borrow_mut();
            if let Some((_, conn)) = conns.iter().find(|(id, _)| *id == per_thread.id) {
                return conn.clone();
            }
            match per_thread.open() {
                Ok(manager) => {
                    let conn = RedisConn::Single(manager);
                    conns.push((per_thread.id, conn.clone()));
                    conn
                }
                Err(err) => {
                    tracing::warn!(error = %err, "opening a per-thread Redis connection failed; using the shared one");
                    self.conn.clone()
                }
            }
        })
    }

    /// The pool, for dedicated connections (blocking reads, bulk loads).
    pub(crate) fn pool(&self) -> &RedisPool {
        &self.pool
    }

    /// Record a `TIME` reply (epoch ms) of a request sent at `sent_local_ms` (this machine's
    /// clock), to estimate Redis' clock. Redis ran TIME after the request was sent, so each
    /// sample is at or above the true offset; the estimate keeps the lowest sample, allowed to
    /// rise by 1 ms per sample so clock drift is followed while one slow reply moves it little.
    pub(crate) fn observe_redis_time(&self, redis_ms: i64, sent_local_ms: i64) {
        let sample = redis_ms - sent_local_ms;
        let _ = self.clock_offset_ms.fetch_update(
            std::sync::atomic::Ordering::Relaxed,
            std::sync::atomic::Ordering::Relaxed,
            |old| {
                Some(if old == i64::MIN {
                    sample
                } else {
                    sample.min(old + 1)
                })
            },
        );
    }

    /// This machine's clock, in epoch ms.
    pub(crate) fn local_now_ms(&self) -> i64 {
        local_ms()
    }

    /// Redis' clock now, estimated from observed `TIME` replies (late rather than early by
    /// about one round trip); this machine's clock until one was observed.
    pub(crate) fn redis_now_ms(&self) -> i64 {
        match self
            .clock_offset_ms
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            i64::MIN => local_ms(),
            offset => local_ms() + offset,
        }
    }

    /// Key builder.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The layout version stored in Redis (`None` when no build has written one yet).
    pub async fn layout(&self) -> redis::RedisResult<Option<u32>> {
        redis::cmd("GET")
            .arg(self.keys.layout())
            .query_async(&mut self.conn())
            .await
    }

    /// Record that the data is in this build's layout ([`keys::LAYOUT_VERSION`]).
    pub(crate) async fn set_layout(&self) -> redis::RedisResult<()> {
        redis::cmd("SET")
            .arg(self.keys.layout())
            .arg(keys::LAYOUT_VERSION)
            .query_async(&mut self.conn())
            .await
    }

    /// Check, once per process, that the data is in this build's layout. A Redis without a
    /// layout version and without layout-1 data (a new deployment) is stamped with this
    /// build's; one holding layout-1 data, or another version, is refused with what to do,
    /// so a new build never reads data it does not understand.
    async fn check_layout(&self) -> anyhow::Result<()> {
        use std::sync::atomic::Ordering::Relaxed;
        if self.layout_checked.load(Relaxed) {
            return Ok(());
        }
        match self.layout().await.context("GET layout")? {
            Some(keys::LAYOUT_VERSION) => {}
            Some(v) if v > keys::LAYOUT_VERSION => anyhow::bail!(
                "the data in Redis is in layout {v}, newer than this build's layout {}: run a newer build",
                keys::LAYOUT_VERSION
            ),
            Some(v) => anyhow::bail!(
                "the data in Redis is in layout {v}: stop every instance and run `geodispatch migrate` (layout {v} -> {})",
                keys::LAYOUT_VERSION
            ),
            None => {
                let legacy: bool = redis::cmd("EXISTS")
                    .arg(self.keys.legacy_driver_directory())
                    .query_async(&mut self.conn())
                    .await
                    .context("EXISTS")?;
                anyhow::ensure!(
                    !legacy,
                    "the data in Redis is in layout 1: stop every instance and run `geodispatch migrate` (layout 1 -> {})",
                    keys::LAYOUT_VERSION
                );
                let _: bool = redis::cmd("SET")
                    .arg(self.keys.layout())
                    .arg(keys::LAYOUT_VERSION)
                    .arg("NX")
                    .query_async(&mut self.conn())
                    .await
                    .context("SET layout")?;
            }
        }
        self.layout_checked.store(true, Relaxed);
        Ok(())
    }

    /// Readiness: Redis answers `PING`, the data is in this build's layout, and every script of
    /// [`scripts::all`] is loaded (loading the missing ones, e.g. after a Redis restart).
    pub(crate) async fn check_ready(&self) -> anyhow::Result<()> {
        let mut conn = self.conn();
        let check = async {
            let _: String = redis::cmd("PING")
                .query_async(&mut conn)
                .await
                .context("PING")?;
            self.check_layout().await?;
            let scripts = scripts::all();
            if scripts.is_empty() {
                return Ok(());
            }
            let mut exists = redis::cmd("SCRIPT");
            exists.arg("EXISTS");
            for script in &scripts {
                exists.arg(script.get_hash());
            }
            let present: Vec<bool> = exists
                .query_async(&mut conn)
                .await
                .context("SCRIPT EXISTS")?;
            for (script, present) in scripts.iter().zip(present) {
                if !present {
                    script
                        .prepare_invoke()
                        .load_async(&mut conn)
                        .await
                        .context("SCRIPT LOAD")?;
                }
            }
            anyhow::Ok(())
        };
        tokio::time::timeout(self.timeout * 2, check)
            .await
            .context("Redis did not answer in time")?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis_cluster_keyslot() {
        // Values of `CLUSTER KEYSLOT` from the Redis Cluster specification and redis.io.
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("somekey"), 11058);
        assert_eq!(slot("{foo}.bar"), slot("foo"));
        assert_eq!(
            slot("a{}b"),
            slot("a{}b"),
            "an empty tag hashes the whole key"
        );
        assert_ne!(slot("a{}b"), slot(""));
        let keys = Keys::new("gd");
        assert_eq!(slot(&keys.seen_index("paris")), slot("paris"));
    }

    #[test]
    fn check_slots_names_the_script_and_keys_that_cross() {
        let keys = Keys::new("gd");
        assert!(
            check_slots([(
                "ok".to_owned(),
                vec![keys.driver_states("paris"), keys.scores("paris")]
            )])
            .is_ok()
        );
        let err = check_slots([(
            "set_position in paris".to_owned(),
            vec![keys.seen_index("paris"), keys.order_directory()],
        )])
        .unwrap_err()
        .to_string();
        assert!(err.contains("set_position in paris"), "{err}");
        assert!(err.contains("gd:orders"), "{err}");
        assert!(err.contains("CROSSSLOT"), "{err}");
    }

    #[test]
    fn topology_follows_the_settings() {
        let mut s = crate::config::Settings::default();
        assert_eq!(
            Topology::from_settings(&s, "redis://a:1"),
            Topology::Standalone("redis://a:1".to_owned())
        );
        s.redis_sentinels = Some("127.0.0.1:26379, redis://127.0.0.1:26380".to_owned());
        assert_eq!(
            Topology::from_settings(&s, ""),
            Topology::Sentinel {
                sentinels: vec![
                    "redis://127.0.0.1:26379".to_owned(),
                    "redis://127.0.0.1:26380".to_owned()
                ],
                master: "mymaster".to_owned()
            }
        );
        s.redis_sentinels = None;
        s.redis_cluster_nodes = Some("127.0.0.1:7000".to_owned());
        assert_eq!(
            Topology::from_settings(&s, ""),
            Topology::Cluster(vec!["redis://127.0.0.1:7000".to_owned()])
        );
    }
}
