//! Settings: built-in defaults, overridden by an optional TOML file (`--config`), overridden by
//! `GEODISPATCH_*` environment variables, overridden by command-line flags.
//!
//! Every field of [`Settings`] is a setting; its environment variable is `GEODISPATCH_` followed
//! by the field name in upper case (`key_prefix` → `GEODISPATCH_KEY_PREFIX`). The README's
//! settings table lists them all; a test checks that it does.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::domain::DispatchPolicy;

/// Environment variable prefix of every setting.
pub(crate) const ENV_PREFIX: &str = "GEODISPATCH_";

/// Settings that are never serialized, so that no dump of the settings shows a secret. They
/// are settings all the same: read from the file and the environment, and listed in
/// [`Settings::names`]. Each defaults to unset.
const SECRET_SETTINGS: [&str; 2] = ["admin_key", "webhook_signing_key"];

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (default).
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// All settings of the service. Field docs are the README table's descriptions.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Address the HTTP server listens on.
    pub listen: String,
    /// Redis URL (`redis://[user:password@]host:port/db` or `rediss://…` for TLS). When unset,
    /// `serve` starts and supervises its own local `redis-server`.
    pub redis_url: Option<String>,
    /// Redis Sentinel addresses, comma-separated (`host:port` or `redis://host:port`): the service
    /// asks them for the primary named `redis_sentinel_master` and follows failovers. Replaces `redis_url`.
    pub redis_sentinels: Option<String>,
    /// Name of the primary the sentinels monitor (`sentinel monitor <name> …`).
    pub redis_sentinel_master: String,
    /// Redis Cluster seed nodes, comma-separated (`host:port` or `redis://host:port`); the rest of
    /// the cluster is discovered. Replaces `redis_url`.
    pub redis_cluster_nodes: Option<String>,
    /// Replicas that must confirm an order write (`WAIT`) before it is acknowledged; 0 does not
    /// wait. Fewer in time: 503, the write stands (a retry with the same `Idempotency-Key`
    /// answers it). Not with Redis Cluster.
    pub redis_wait_replicas: u32,
    /// How long `WAIT` may take, in milliseconds.
    pub redis_wait_timeout_ms: u64,
    /// Data directory of the self-managed `redis-server` (AOF on). Ignored when `redis_url` is set.
    pub redis_data_dir: PathBuf,
    /// Prefix of every Redis key and channel the service uses (lets tenants and tests share a Redis).
    pub key_prefix: String,
    /// Timeout of one Redis command on the request path, in milliseconds.
    pub redis_timeout_ms: u64,
    /// Directory of seed data to load at startup (`serve --seed DIR`); unset loads nothing.
    pub seed: Option<PathBuf>,
    /// GeoJSON file with the service areas; unset uses the built-in `seed-data/cities.geojson`.
    pub cities_file: Option<PathBuf>,
    /// Log format: `text` or `json`.
    pub log_format: LogFormat,
    /// Maximum request body size in bytes; larger bodies get 413.
    pub body_limit_bytes: usize,
    /// HTTP worker threads; 0 means one per CPU core.
    pub http_workers: usize,
    /// A driver whose last position is older than this (ms) is never a search or dispatch result.
    pub driver_ttl_ms: u64,
    /// How far in the future (ms, by Redis' clock) a position's `recorded_at` may be.
    pub max_clock_skew_ms: u64,
    /// Largest number of positions in one batch; a larger batch is rejected whole.
    pub batch_max_positions: usize,
    /// Interval between two sweeps of stale drivers out of the indexes (ms).
    pub sweep_interval_ms: u64,
    /// Most drivers removed per sweep script call (a count cap next to the time budget).
    pub sweep_batch: usize,
    /// Redis time one sweep script call may spend, in µs, measured by the script with Redis'
    /// clock; it stops after the chunk during which the budget ran out. Bounds how long one
    /// call blocks Redis.
    pub sweep_call_budget_us: u64,
    /// Largest share of the Redis thread the sweepers of a city may take together (0 < share
    /// ≤ 1): after a call that spent `t`, no call of that city works for `t × (1 − share) /
    /// share`. Bounds how much of Redis a mass of stale drivers takes while it is cleared.
    pub sweep_redis_share: f64,
    /// Default `limit` of nearby search.
    pub search_default_limit: usize,
    /// Largest `limit` of nearby search.
    pub search_max_limit: usize,
    /// Default `radius_m` of nearby search.
    pub search_default_radius_m: f64,
    /// Largest `radius_m` of nearby search (a box may be up to twice as wide and high).
    pub search_max_radius_m: f64,
    /// Most GEO members one search may read over all its widening steps (stale ones
    /// included). A search that reaches it before finding `limit` fresh drivers answers what
    /// it found with `partial: true`, so a stale majority cannot make one request read
    /// thousands of members.
    pub search_max_members: usize,
    /// With `--seed`, re-post the seed fleet's positions every `driver_ttl_ms / 2` so the demo
    /// fleet stays searchable (it overrides positions reported for those driver ids).
    pub seed_refresh: bool,
    /// Largest page size of paginated lists (leaderboard).
    pub page_max_size: u64,
    /// Candidate ranking: composite points lost per km of distance.
    pub ranking_distance_weight: f64,
    /// Candidate ranking: composite points per point of driver score.
    pub ranking_score_weight: f64,
    /// Candidate ranking: the score a driver without one counts with. 4.25, the middle of the
    /// seed ratings' range 3.5–5.0 (and their median), ranks a new driver like a typical rated
    /// one, so that distance decides between them (0 would make a new driver at the pickup lose to a 5.0
    /// driver up to 5 km away with the default weights). A constant rather than the fleet's
    /// median, so that a ranking is predictable, reproducible and costs no extra read; set it on
    /// the scale of your scores.
    pub ranking_unscored_score: f64,
    /// Candidate ranking ranks the `limit × factor` nearest available drivers (1: re-rank the
    /// nearest `limit`; larger widens the choice at the cost of a wider search).
    pub ranking_pool_factor: usize,
    /// Time to live of a dispatch lock (ms); a holder's watchdog renews it every third of this.
    pub lock_ttl_ms: u64,
    /// How long a driver has to accept an offer (ms) before it expires and the order is
    /// dispatched again without that driver.
    pub offer_ttl_ms: u64,
    /// Largest distance (m) between a pickup and a driver dispatch offers the order to.
    pub dispatch_radius_m: f64,
    /// Ranked candidates one dispatch tries, best first, before it gives up for this attempt.
    pub dispatch_candidates: usize,
    /// Dispatch attempts that found no driver before a pending order fails.
    pub dispatch_max_attempts: u32,
    /// Delay (ms) before a pending order without a driver is dispatched again; also how long an
    /// order may wait for a dispatch that never completes (a crashed instance) before it is
    /// queued again.
    pub dispatch_retry_ms: u64,
    /// How pending orders find drivers: `greedy` (each order, when dispatched, to its best
    /// candidate) or `batched` (rounds every `match_interval_ms` assign all due orders of a city
    /// at once, at least total cost, timing pickups to `ready_at`).
    pub dispatch_policy: DispatchPolicy,
    /// Interval (ms) between two matching rounds of a city (batched policy).
    pub match_interval_ms: u64,
    /// How long (ms) before its `ready_at` an order enters the matching pool; a round assigns it
    /// once waiting one more round would bring its nearest free driver after the ready time.
    pub match_lookahead_ms: u64,
    /// Time to live (ms) of a city's matching lease: the instance holding it runs the city's
    /// rounds and renews it; when that instance dies, another takes over within this time.
    pub match_lease_ttl_ms: u64,
    /// Most pending orders one round considers (the earliest first).
    pub match_max_orders: usize,
    /// Straight-line travel speed (m/s) that rounds assume for a driver on the way to a pickup.
    pub match_speed_mps: f64,
    /// Time (ms) a driver needs at the pickup before the order can be handed over (parking,
    /// walking in): rounds aim for the driver to arrive this long before `ready_at`.
    pub match_pickup_lead_ms: u64,
    /// How far ahead (ms) rounds count on a driver carrying a picked-up order: one expected to
    /// be free within this time is a candidate (at its drop-off, from then on); when it is an
    /// order's best, the order waits for it. 0: only available drivers are candidates.
    pub match_busy_horizon_ms: u64,
    /// Time (ms) rounds expect a driver to spend at the drop-off before it can leave for the
    /// next pickup.
    pub match_dropoff_service_ms: u64,
    /// Batched policy: each round also sends idle available drivers toward the pickup spots
    /// where orders came from in the last `reposition_window_ms` and no idle driver is within
    /// `reposition_cover_m` (a `driver.reposition` event to the driver), so that the next
    /// orders there find a driver near. Off: idle drivers wait where they are.
    pub reposition_idle_drivers: bool,
    /// How far back (ms) the pickups of recent orders count as demand for repositioning.
    pub reposition_window_ms: u64,
    /// How far ahead (ms) repositioning provides for: a spot with `n` orders in the window
    /// asks for `ceil(n × horizon / window)` idle drivers near it, at most 3.
    pub reposition_horizon_ms: u64,
    /// An idle driver within this distance (m) of a spot covers it (it is not moved).
    pub reposition_cover_m: f64,
    /// Farthest (m) an idle driver is sent to a spot.
    pub reposition_max_m: f64,
    /// Dispatch lock backend: `redis` (the lock lives next to the order, in the same Redis) or
    /// `redlock` (additionally a Redlock over `redlock_nodes`, independent of the data Redis).
    pub lock_backend: String,
    /// Independent Redis nodes of the Redlock backend, comma-separated (`host:port`), 3 or more.
    pub redlock_nodes: Option<String>,
    /// Queue workers per city per service instance, each reading one city's dispatch stream (`serve --workers N`).
    pub dispatch_workers: usize,
    /// A queue entry a worker read but did not acknowledge for this long (ms; the worker
    /// crashed) is taken over by another worker (XAUTOCLAIM).
    pub queue_claim_idle_ms: u64,
    /// Entries one XAUTOCLAIM call takes over (a page); a take-over pass follows the cursor
    /// page after page, up to 8 pages, and the next pass resumes where it stopped.
    pub queue_claim_count: usize,
    /// Deliveries of a queue entry (the first read, then each take-over) that may end without
    /// an acknowledgement; at the next take-over the entry moves to the city's dead-letter
    /// stream and its order fails. 5: with `queue_claim_idle_ms` between deliveries, an entry
    /// goes only after failing for over a minute (longer than a failover or a restart, and
    /// than `dispatch_max_attempts` × `dispatch_retry_ms` that an order without drivers waits).
    pub queue_max_deliveries: u32,
    /// Interval (ms) of the timer scan that expires unanswered offers and re-queues waiting
    /// orders.
    pub timer_interval_ms: u64,
    /// Approximate length (MAXLEN ~) at which each city's event stream, dispatch queue and
    /// dead-letter stream are trimmed.
    pub events_maxlen: u64,
    /// Points added to a driver's score per delivered order.
    pub score_per_delivery: f64,
    /// Detect drivers arriving at (and leaving) the pickup and drop-off of their open order
    /// from their positions (`driver.arrived_pickup`, `driver.arrived_dropoff`,
    /// `driver.left_pickup` events; the order's `arrived_pickup_at` / `arrived_dropoff_at`).
    pub arrival_detection: bool,
    /// A driver within this distance (m) of its target has come there; it leaves only beyond
    /// 1.5 times it (hysteresis, so that GPS jitter at the edge does not flap).
    pub arrival_radius_m: f64,
    /// How long (ms, by the positions' `recorded_at`) a driver must stay at its target before
    /// its arrival is emitted.
    pub arrival_dwell_ms: u64,
    /// Refuse `deliver` (409 `not-arrived`, nothing written) for an order with a drop-off
    /// before the driver's arrival there was detected. Needs `arrival_detection`.
    pub require_arrival_for_delivery: bool,
    /// How long (ms) an `Idempotency-Key` of `POST /v1/orders` is remembered.
    pub idempotency_ttl_ms: u64,
    /// Require an API key or session token (`Authorization: Bearer …`) on every `/v1` route.
    pub auth_enabled: bool,
    /// The bootstrap admin key (`GEODISPATCH_ADMIN_KEY`; at least 16 characters). Unset: `serve`
    /// generates one for the run, creates development keys and prints them.
    #[serde(skip_serializing)]
    pub admin_key: Option<SecretString>,
    /// How long (ms) an instance trusts an API key it looked up; a key revoked on another
    /// instance keeps working there at most this long.
    pub auth_cache_ms: u64,
    /// A driver session expires after this long (ms) without use (sliding expiration).
    pub session_idle_ms: u64,
    /// A driver session expires this long (ms) after it was created, however much it is used.
    pub session_max_age_ms: u64,
    /// Apply the rate limits below.
    pub rate_limits_enabled: bool,
    /// Limit of location and status updates, per driver: `token_bucket:BURST:PER_SECOND`,
    /// `sliding:LIMIT:WINDOW_MS` or `fixed:LIMIT:WINDOW_MS`.
    pub rate_limit_location: String,
    /// Limit of order creation and dispatch, per API key (same forms).
    pub rate_limit_dispatch: String,
    /// Limit of every other `/v1` request, per API key (same forms).
    pub rate_limit_default: String,
    /// Largest number of open event streams (SSE) per API key; more get 429.
    pub sse_max_per_key: u64,
    /// The key every webhook signing secret is derived from (at least 32 characters). Redis
    /// holds only a random salt per endpoint, so a dump of Redis cannot sign as the service.
    /// Unset: webhook endpoints cannot be created.
    #[serde(skip_serializing)]
    pub webhook_signing_key: Option<SecretString>,
    /// Accept `http://` webhook URLs (otherwise only `https://`).
    pub webhook_allow_http: bool,
    /// Accept webhook URLs whose host is or resolves to a loopback, private, link-local,
    /// shared or metadata address (refused by default, at creation and at every delivery).
    pub webhook_allow_private: bool,
    /// Timeout (ms) of one webhook request, from connecting to the end of the answer.
    pub webhook_timeout_ms: u64,
    /// Delays (ms, comma-separated) between a failed webhook attempt and the next; after the
    /// last one the delivery is dead-lettered. Each delay gets ±20% jitter.
    pub webhook_retry_schedule_ms: String,
    /// Deliveries in flight at once per endpoint (its lanes); one order's events always share
    /// a lane, so they arrive in order.
    pub webhook_lanes: u32,
    /// Undelivered messages an endpoint may hold; events for a full endpoint are dropped
    /// (counted, and recorded in its deliveries).
    pub webhook_max_backlog: u64,
    /// Dead-lettered deliveries in a row after which an endpoint is disabled.
    pub webhook_disable_after: u32,
    /// Webhook requests in flight at once per service instance.
    pub webhook_max_in_flight: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".to_owned(),
            redis_url: None,
            redis_sentinels: None,
            redis_sentinel_master: "mymaster".to_owned(),
            redis_cluster_nodes: None,
            redis_wait_replicas: 0,
            redis_wait_timeout_ms: 100,
            redis_data_dir: PathBuf::from("./data/redis"),
            key_prefix: "gd".to_owned(),
            redis_timeout_ms: 1_000,
            seed: None,
            cities_file: None,
            log_format: LogFormat::Text,
            body_limit_bytes: 1024 * 1024,
            http_workers: 0,
            driver_ttl_ms: 60_000,
            max_clock_skew_ms: 30_000,
            batch_max_positions: 1_000,
            sweep_interval_ms: 5_000,
            sweep_batch: 1_000,
            sweep_call_budget_us: 500,
            sweep_redis_share: 0.25,
            search_default_limit: 20,
            search_max_limit: 100,
            search_default_radius_m: 5_000.0,
            search_max_radius_m: 50_000.0,
            search_max_members: 500,
            seed_refresh: true,
            page_max_size: 100,
            ranking_distance_weight: 1.0,
            ranking_score_weight: 1.0,
            ranking_unscored_score: 4.25,
            ranking_pool_factor: 1,
            lock_ttl_ms: 5_000,
            offer_ttl_ms: 20_000,
            dispatch_radius_m: 5_000.0,
            dispatch_candidates: 10,
            dispatch_max_attempts: 10,
            dispatch_retry_ms: 5_000,
            dispatch_workers: 2,
            dispatch_policy: DispatchPolicy::Greedy,
            match_interval_ms: 1_000,
            match_lookahead_ms: 600_000,
            match_lease_ttl_ms: 3_000,
            match_max_orders: 2_000,
            match_speed_mps: 5.0,
            match_pickup_lead_ms: 60_000,
            match_busy_horizon_ms: 300_000,
            match_dropoff_service_ms: 120_000,
            reposition_idle_drivers: false,
            reposition_window_ms: 3_600_000,
            reposition_horizon_ms: 900_000,
            reposition_cover_m: 500.0,
            reposition_max_m: 3_000.0,
            lock_backend: "redis".to_owned(),
            redlock_nodes: None,
            queue_claim_idle_ms: 15_000,
            queue_claim_count: 16,
            queue_max_deliveries: 5,
            timer_interval_ms: 250,
            events_maxlen: 100_000,
            score_per_delivery: 0.01,
            arrival_detection: true,
            arrival_radius_m: 50.0,
            arrival_dwell_ms: 20_000,
            require_arrival_for_delivery: false,
            idempotency_ttl_ms: 86_400_000,
            auth_enabled: true,
            admin_key: None,
            auth_cache_ms: 5_000,
            session_idle_ms: 1_800_000,
            session_max_age_ms: 86_400_000,
            rate_limits_enabled: true,
            rate_limit_location: "token_bucket:10:2".to_owned(),
            rate_limit_dispatch: "sliding:600:60000".to_owned(),
            rate_limit_default: "fixed:1200:60000".to_owned(),
            sse_max_per_key: 5,
            webhook_signing_key: None,
            webhook_allow_http: false,
            webhook_allow_private: false,
            webhook_timeout_ms: 10_000,
            webhook_retry_schedule_ms: "5000,300000,1800000,7200000,18000000,36000000,21600000"
                .to_owned(),
            webhook_lanes: 4,
            webhook_max_backlog: 10_000,
            webhook_disable_after: 5,
            webhook_max_in_flight: 64,
        }
    }
}

impl Settings {
    /// Load settings: defaults < TOML file (if given) < `GEODISPATCH_*` variables from `env`.
    pub(crate) fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Self> {
        let defaults = serde_json::Value::Object(Self::defaults()?);
        let mut merged = defaults.clone();
        let serde_json::Value::Object(map) = &mut merged else {
            unreachable!("settings serialize to an object")
        };
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config file {}", path.display()))?;
            let table: toml::Table = toml::from_str(&text)
                .with_context(|| format!("parsing config file {}", path.display()))?;
            for (k, v) in serde_json::to_value(table)?
                .as_object()
                .cloned()
                .unwrap_or_default()
            {
                if !map.contains_key(&k) {
                    bail!("unknown setting `{k}` in {}", path.display());
                }
                map.insert(k, v);
            }
        }
        for (name, raw) in env {
            let Some(key) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let key = key.to_ascii_lowercase();
            let Some(default) = defaults.get(&key) else {
                // Not a setting of ours (another tool's variable sharing the prefix): ignore.
                continue;
            };
            let value = match default {
                serde_json::Value::Number(_) | serde_json::Value::Bool(_) => {
                    serde_json::from_str(&raw)
                        .with_context(|| format!("{name}={raw:?} is not a valid value"))?
                }
                _ if raw.is_empty() => serde_json::Value::Null,
                _ => serde_json::Value::String(raw),
            };
            map.insert(key, value);
        }
        let settings: Settings = serde_json::from_value(merged)
            .context("invalid settings (after merging file and environment)")?;
        settings.validate()?;
        Ok(settings)
    }

    /// Every setting's default as JSON, secrets included (as unset).
    fn defaults() -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
        let serde_json::Value::Object(mut map) = serde_json::to_value(Settings::default())? else {
            unreachable!("settings serialize to an object")
        };
        for name in SECRET_SETTINGS {
            map.insert(name.to_owned(), serde_json::Value::Null);
        }
        Ok(map)
    }

    /// The delays of `webhook_retry_schedule_ms`, in ms.
    pub fn webhook_retry_schedule(&self) -> anyhow::Result<Vec<u64>> {
        let delays: Result<Vec<u64>, _> = self
            .webhook_retry_schedule_ms
            .split(',')
            .map(|d| d.trim().parse::<u64>())
            .collect();
        match delays {
            Ok(d) if !d.is_empty() && d.len() <= 30 && d.iter().all(|&ms| ms > 0) => Ok(d),
            _ => bail!(
                "webhook_retry_schedule_ms must list 1 to 30 positive delays in ms, comma-separated, got {:?}",
                self.webhook_retry_schedule_ms
            ),
        }
    }

    /// Load from the process environment.
    pub fn from_env(file: Option<&Path>) -> anyhow::Result<Self> {
        Self::load(file, std::env::vars())
    }

    /// Reject settings that cannot work, with a message naming the setting.
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        if self.key_prefix.is_empty()
            || !self
                .key_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            bail!(
                "key_prefix must be non-empty [A-Za-z0-9_.-], got {:?} (braces would change the {{city}} hash tag that keeps each script's keys in one Redis Cluster slot)",
                self.key_prefix
            );
        }
        if self.driver_ttl_ms == 0 || self.sweep_interval_ms == 0 || self.sweep_batch == 0 {
            bail!("driver_ttl_ms, sweep_interval_ms and sweep_batch must be positive");
        }
        if self.sweep_call_budget_us == 0 || self.sweep_call_budget_us > 1_000_000 {
            bail!("sweep_call_budget_us must be between 1 and 1000000");
        }
        if !(self.sweep_redis_share > 0.0 && self.sweep_redis_share <= 1.0) {
            bail!("sweep_redis_share must be more than 0 and at most 1");
        }
        if self.search_max_members < self.search_max_limit {
            bail!("search_max_members must be at least search_max_limit");
        }
        if self.batch_max_positions == 0
            || self.search_max_limit == 0
            || self.search_default_limit == 0
        {
            bail!(
                "batch_max_positions, search_max_limit and search_default_limit must be positive"
            );
        }
        if !(self.search_max_radius_m > 0.0 && self.search_default_radius_m > 0.0) {
            bail!("search radii must be positive");
        }
        if self.lock_ttl_ms < 30
            || self.offer_ttl_ms == 0
            || self.dispatch_retry_ms == 0
            || self.timer_interval_ms == 0
            || self.queue_claim_idle_ms == 0
            || self.idempotency_ttl_ms == 0
        {
            bail!(
                "lock_ttl_ms (at least 30), offer_ttl_ms, dispatch_retry_ms, timer_interval_ms, queue_claim_idle_ms and idempotency_ttl_ms must be positive"
            );
        }
        if self.match_interval_ms == 0
            || self.match_lease_ttl_ms < 30
            || self.match_max_orders == 0
            || !(self.match_speed_mps > 0.0 && self.match_speed_mps.is_finite())
        {
            bail!(
                "match_interval_ms, match_max_orders and match_speed_mps must be positive, match_lease_ttl_ms at least 30"
            );
        }
        if self.reposition_window_ms == 0
            || self.reposition_horizon_ms == 0
            || !(self.reposition_cover_m > 0.0
                && self.reposition_cover_m <= self.reposition_max_m
                && self.reposition_max_m <= self.search_max_radius_m)
        {
            bail!(
                "reposition_window_ms and reposition_horizon_ms must be positive, and 0 < reposition_cover_m <= reposition_max_m <= search_max_radius_m"
            );
        }
        if self.dispatch_candidates == 0
            || self.dispatch_max_attempts == 0
            || self.events_maxlen < 100
        {
            bail!(
                "dispatch_candidates and dispatch_max_attempts must be positive, events_maxlen at least 100"
            );
        }
        if self.queue_claim_count == 0 || self.queue_max_deliveries == 0 {
            bail!("queue_claim_count and queue_max_deliveries must be positive");
        }
        if !(self.dispatch_radius_m > 0.0 && self.dispatch_radius_m <= self.search_max_radius_m) {
            bail!("dispatch_radius_m must be positive and at most search_max_radius_m");
        }
        if !self.score_per_delivery.is_finite() {
            bail!("score_per_delivery must be a finite number");
        }
        if !(self.arrival_radius_m >= 1.0 && self.arrival_radius_m <= 10_000.0) {
            bail!("arrival_radius_m must be between 1 and 10000 metres");
        }
        if self.arrival_dwell_ms > 3_600_000 {
            bail!("arrival_dwell_ms must be at most 3600000 (an hour)");
        }
        if self.require_arrival_for_delivery && !self.arrival_detection {
            bail!(
                "require_arrival_for_delivery needs arrival_detection: without it no arrival is ever detected and no order could be delivered"
            );
        }
        // The bound of a written score, so that a composite stays an exact double.
        if !(self.ranking_unscored_score.is_finite() && self.ranking_unscored_score.abs() < 1e15) {
            bail!("ranking_unscored_score must be a finite number below 1e15 in magnitude");
        }
        for (name, spec) in [
            ("rate_limit_location", &self.rate_limit_location),
            ("rate_limit_dispatch", &self.rate_limit_dispatch),
            ("rate_limit_default", &self.rate_limit_default),
        ] {
            crate::domain::Policy::parse(spec).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        }
        if let Some(key) = self.admin_key.as_ref().map(ExposeSecret::expose_secret)
            && (key.len() < 16 || !key.bytes().all(|b| b.is_ascii_graphic()))
        {
            bail!("admin_key must be at least 16 visible ASCII characters");
        }
        if self.session_idle_ms == 0 || self.session_max_age_ms == 0 || self.sse_max_per_key == 0 {
            bail!("session_idle_ms, session_max_age_ms and sse_max_per_key must be positive");
        }
        if self.body_limit_bytes < 1024 {
            bail!("body_limit_bytes must be at least 1024");
        }
        if let Some(url) = &self.redis_url
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            bail!("redis_url must start with redis:// or rediss://");
        }
        let topologies = [
            self.redis_url.is_some(),
            self.redis_sentinels.is_some(),
            self.redis_cluster_nodes.is_some(),
        ];
        if topologies.iter().filter(|set| **set).count() > 1 {
            bail!("set at most one of redis_url, redis_sentinels and redis_cluster_nodes");
        }
        for (name, list) in [
            ("redis_sentinels", &self.redis_sentinels),
            ("redis_cluster_nodes", &self.redis_cluster_nodes),
        ] {
            if let Some(list) = list
                && list.split(',').all(|s| s.trim().is_empty())
            {
                bail!("{name} must list at least one host:port");
            }
        }
        if self.redis_wait_replicas > 0 && self.redis_cluster_nodes.is_some() {
            bail!(
                "redis_wait_replicas is not supported with redis_cluster_nodes (WAIT applies to one node)"
            );
        }
        match self.lock_backend.as_str() {
            "redis" => {}
            "redlock" => {
                let n = self
                    .redlock_nodes
                    .as_deref()
                    .map_or(0, |l| l.split(',').filter(|s| !s.trim().is_empty()).count());
                if n < 3 {
                    bail!(
                        "lock_backend = \"redlock\" needs redlock_nodes to list at least 3 independent Redis nodes, got {n}"
                    );
                }
            }
            other => bail!("lock_backend must be \"redis\" or \"redlock\", got {other:?}"),
        }
        if let Some(key) = self
            .webhook_signing_key
            .as_ref()
            .map(ExposeSecret::expose_secret)
            && key.len() < 32
        {
            bail!("webhook_signing_key must be at least 32 characters");
        }
        self.webhook_retry_schedule()?;
        if self.webhook_timeout_ms == 0
            || self.webhook_lanes == 0
            || self.webhook_lanes > 64
            || self.webhook_max_backlog == 0
            || self.webhook_disable_after == 0
            || self.webhook_max_in_flight == 0
        {
            bail!(
                "webhook_timeout_ms, webhook_max_backlog, webhook_disable_after and webhook_max_in_flight must be positive, webhook_lanes between 1 and 64"
            );
        }
        if self.redis_sentinel_master.is_empty() {
            bail!("redis_sentinel_master must not be empty");
        }
        Ok(())
    }

    /// Names of every setting, in declaration order (for the README table check).
    pub fn names() -> Vec<String> {
        Self::defaults()
            .expect("serializable")
            .keys()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_apply_without_file_or_env() {
        let s = Settings::load(None, env(&[])).unwrap();
        assert_eq!(s.listen, "127.0.0.1:8080");
        assert_eq!(s.key_prefix, "gd");
        assert!(s.redis_url.is_none());
    }

    #[test]
    fn environment_overrides_file_which_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("gd-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("gd.toml");
        std::fs::write(
            &file,
            "listen = \"0.0.0.0:9000\"\nkey_prefix = \"file\"\nbody_limit_bytes = 4096\n",
        )
        .unwrap();
        let s = Settings::load(
            Some(&file),
            env(&[
                ("GEODISPATCH_KEY_PREFIX", "envp"),
                ("GEODISPATCH_HTTP_WORKERS", "3"),
                ("OTHER", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(s.listen, "0.0.0.0:9000");
        assert_eq!(s.key_prefix, "envp");
        assert_eq!(s.body_limit_bytes, 4096);
        assert_eq!(s.http_workers, 3);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn unknown_settings_in_a_file_are_rejected() {
        let dir = std::env::temp_dir().join(format!("gd-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("gd.toml");
        std::fs::write(&file, "lisen = \"0.0.0.0:9000\"\n").unwrap();
        let err = Settings::load(Some(&file), env(&[])).unwrap_err();
        assert!(format!("{err:#}").contains("lisen"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_admin_key_is_read_from_the_file_and_the_environment_and_checked() {
        let from_env = Settings::load(
            None,
            env(&[("GEODISPATCH_ADMIN_KEY", "env-admin-key-0123456789")]),
        )
        .unwrap();
        assert_eq!(
            from_env.admin_key.as_ref().map(ExposeSecret::expose_secret),
            Some("env-admin-key-0123456789")
        );
        let dir = std::env::temp_dir().join(format!("gd-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("gd.toml");
        std::fs::write(&file, "admin_key = \"file-admin-key-0123456789\"\n").unwrap();
        let from_file = Settings::load(Some(&file), env(&[])).unwrap();
        assert_eq!(
            from_file
                .admin_key
                .as_ref()
                .map(ExposeSecret::expose_secret),
            Some("file-admin-key-0123456789")
        );
        let overridden = Settings::load(
            Some(&file),
            env(&[("GEODISPATCH_ADMIN_KEY", "env-admin-key-0123456789")]),
        )
        .unwrap();
        assert_eq!(
            overridden
                .admin_key
                .as_ref()
                .map(ExposeSecret::expose_secret),
            Some("env-admin-key-0123456789")
        );
        let unset = Settings::load(Some(&file), env(&[("GEODISPATCH_ADMIN_KEY", "")])).unwrap();
        assert!(
            unset.admin_key.is_none(),
            "an empty variable unsets the key"
        );
        std::fs::remove_dir_all(dir).unwrap();
        for (bad, why) in [
            ("short-key", "fewer than 16 characters"),
            ("admin key with spaces 0123", "a space is not visible ASCII"),
            ("admin-key-0123456789-é", "not ASCII"),
        ] {
            let err = Settings::load(None, env(&[("GEODISPATCH_ADMIN_KEY", bad)])).unwrap_err();
            assert!(
                format!("{err:#}").contains("admin_key must be at least 16 visible ASCII"),
                "{bad:?} must be refused: {why}"
            );
        }
        assert!(Settings::names().contains(&"admin_key".to_owned()));
    }

    #[test]
    fn the_admin_key_never_shows_in_debug_output_or_serialized_settings() {
        let key = "never-printed-admin-key-0123456789";
        let settings = Settings {
            admin_key: Some(key.into()),
            ..Settings::default()
        };
        let debug = format!("{settings:?}");
        let json = serde_json::to_string(&settings).unwrap();
        assert!(!debug.contains(key), "{debug}");
        assert!(!json.contains(key), "{json}");
        assert!(
            !json.contains("admin_key"),
            "the field is not serialized at all"
        );
    }

    /// Each `(variable, value)` alone is refused, with an error naming its setting.
    fn assert_refused_by_name(cases: &[((&str, &str), &str)]) {
        for &(pair, why) in cases {
            let err = Settings::load(None, env(&[pair]))
                .map(|_| ())
                .expect_err(why);
            let name = pair.0.trim_start_matches(ENV_PREFIX).to_ascii_lowercase();
            let text = format!("{err:#}").to_ascii_lowercase();
            assert!(text.contains(&name), "{why}: {err:#}");
        }
    }

    #[test]
    fn the_sweep_budget_and_share_and_the_search_member_cap_are_bounded() {
        let d = Settings::default();
        assert_eq!(
            (
                d.sweep_call_budget_us,
                d.sweep_redis_share,
                d.search_max_members
            ),
            (500, 0.25, 500)
        );
        assert_refused_by_name(&[
            (
                ("GEODISPATCH_SWEEP_CALL_BUDGET_US", "0"),
                "a call must be allowed some time",
            ),
            (
                ("GEODISPATCH_SWEEP_CALL_BUDGET_US", "2000000"),
                "a call of seconds would block Redis",
            ),
            (
                ("GEODISPATCH_SWEEP_REDIS_SHARE", "0"),
                "no share never sweeps",
            ),
            (
                ("GEODISPATCH_SWEEP_REDIS_SHARE", "1.5"),
                "more than the whole thread",
            ),
            (("GEODISPATCH_SWEEP_REDIS_SHARE", "NaN"), "not a share"),
            (
                ("GEODISPATCH_SEARCH_MAX_MEMBERS", "50"),
                "below search_max_limit: a search could never read its limit",
            ),
        ]);
        let ok = Settings::load(None, env(&[("GEODISPATCH_SWEEP_REDIS_SHARE", "1")]));
        assert_eq!(ok.unwrap().sweep_redis_share, 1.0);
    }

    #[test]
    fn repositioning_distances_and_durations_are_bounded() {
        assert_refused_by_name(&[
            (
                ("GEODISPATCH_REPOSITION_WINDOW_MS", "0"),
                "no window, no demand",
            ),
            (("GEODISPATCH_REPOSITION_HORIZON_MS", "0"), "no horizon"),
            (
                ("GEODISPATCH_REPOSITION_COVER_M", "0"),
                "nobody would cover",
            ),
            (
                ("GEODISPATCH_REPOSITION_COVER_M", "5000"),
                "covering farther than a driver is ever sent",
            ),
            (
                ("GEODISPATCH_REPOSITION_MAX_M", "60000"),
                "beyond what a search may cover",
            ),
        ]);
        let ok = Settings::load(None, env(&[("GEODISPATCH_REPOSITION_COVER_M", "3000")]));
        assert_eq!(ok.unwrap().reposition_cover_m, 3_000.0);
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = Settings::load(None, env(&[("GEODISPATCH_HTTP_WORKERS", "many")])).unwrap_err();
        assert!(format!("{err:#}").contains("GEODISPATCH_HTTP_WORKERS"));
        let err = Settings::load(None, env(&[("GEODISPATCH_REDIS_URL", "http://x")])).unwrap_err();
        assert!(format!("{err:#}").contains("redis_url"));
    }

    #[test]
    fn the_unscored_score_must_be_a_finite_score() {
        let ok = Settings::load(None, env(&[("GEODISPATCH_RANKING_UNSCORED_SCORE", "-2.5")]));
        assert_eq!(ok.unwrap().ranking_unscored_score, -2.5);
        for bad in [f64::NAN, f64::INFINITY, -1e300] {
            let settings = Settings {
                ranking_unscored_score: bad,
                ..Settings::default()
            };
            let err = settings.validate().unwrap_err();
            assert!(
                format!("{err:#}").contains("ranking_unscored_score"),
                "{bad}: {err:#}"
            );
        }
    }

    #[test]
    fn arrival_settings_are_checked() {
        let cases: [(Settings, &str, &str); 4] = [
            (
                Settings {
                    arrival_radius_m: 0.0,
                    ..Settings::default()
                },
                "arrival_radius_m",
                "a zero radius is never entered",
            ),
            (
                Settings {
                    arrival_radius_m: f64::NAN,
                    ..Settings::default()
                },
                "arrival_radius_m",
                "not a distance",
            ),
            (
                Settings {
                    arrival_dwell_ms: 7_200_000,
                    ..Settings::default()
                },
                "arrival_dwell_ms",
                "a driver never waits two hours at a pickup",
            ),
            (
                Settings {
                    arrival_detection: false,
                    require_arrival_for_delivery: true,
                    ..Settings::default()
                },
                "require_arrival_for_delivery needs arrival_detection",
                "no order could ever be delivered",
            ),
        ];
        for (settings, names, why) in cases {
            let err = settings.validate().unwrap_err();
            assert!(format!("{err:#}").contains(names), "{why}: {err:#}");
        }
        let on = Settings::load(
            None,
            env(&[("GEODISPATCH_REQUIRE_ARRIVAL_FOR_DELIVERY", "true")]),
        )
        .unwrap();
        assert!(on.require_arrival_for_delivery && on.arrival_detection);
    }
}
