//! `geodispatch-tools bench faults <scenario>`: dispatch load while something fails, and what it
//! cost. Behind the figures of `docs/RELIABILITY.md`; the integration tests run short versions.
//!
//! Every scenario runs the service as real child processes (`geodispatch serve`, found at
//! [`FaultOptions::binary`]) so that they can be killed (SIGKILL) or paused (SIGSTOP), loads a
//! fleet, then runs `concurrency` closed loops, each playing one order's whole life over HTTP:
//! create it (`dispatch: now` or `queued`), wait for its offer, then accept, pick up and deliver
//! with the offer's fencing token, retrying a step on a 5xx or a dead connection (on the next
//! instance) until `step_deadline`. Meanwhile the scenario injects its fault:
//!
//! - `sentinel-failover`: Sentinel group (1 primary, 2 replicas, 3 sentinels), one instance;
//!   the primary is killed (SIGKILL) at `fault_at`;
//! - `kill-instances`: three instances on one Redis; every `fault_every` one is killed and
//!   restarted a second later (its queue entries are taken over with XAUTOCLAIM);
//! - `stop-instance`: three instances; every `fault_every` one is paused (SIGSTOP) for three
//!   lock TTLs, then resumed (SIGCONT): its leases expire while it sleeps;
//! - `redis-restart`: one instance; Redis (AOF `everysec` or `always`) is killed at
//!   `fault_at` and restarted from its append-only file.
//!
//! Afterwards every order is read back and the report counts: acknowledged writes lost (a 201
//! order that no longer exists, or an acknowledged step the order no longer shows), orders
//! stuck (acknowledged but not delivered when the load ended), double assignments (checked on
//! the client's own acknowledgements and on the server's event history with
//! [`geodispatch::events::check_invariants`]), fence rejections, and the seconds during which requests
//! failed.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use serde_json::{Value, json};

use crate::load::Conn;
use crate::rng::SplitMix64;
use crate::topology::LocalSentinelGroup;
use geodispatch::store::local::{LocalRedis, LocalRedisOptions, free_port};
use geodispatch::store::{Store, Topology};

/// Which fault to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Kill the Sentinel-managed primary.
    SentinelFailover,
    /// Kill one of three service instances every `fault_every`.
    KillInstances,
    /// Pause one of three instances past the lock TTL every `fault_every`.
    StopInstance,
    /// Kill Redis and restart it from its AOF.
    RedisRestart,
}

/// Options of a fault run.
#[derive(Debug, Clone)]
pub struct FaultOptions {
    /// The fault.
    pub scenario: Scenario,
    /// The `geodispatch` binary to run instances from.
    pub binary: PathBuf,
    /// How long new orders are started.
    pub duration: Duration,
    /// Concurrent order loops.
    pub concurrency: usize,
    /// Drivers in the fleet.
    pub drivers: usize,
    /// When the single fault happens (failover, Redis restart).
    pub fault_at: Duration,
    /// Time between faults (instance kills and pauses).
    pub fault_every: Duration,
    /// `min-replicas-to-write` on the Sentinel primary (0: off).
    pub min_replicas_to_write: u32,
    /// `redis_wait_replicas` of the service (0: off).
    pub wait_replicas: u32,
    /// Sentinel failover: stall the replicas (SIGSTOP) and cut their replication links this
    /// long before the primary is killed, so that acknowledged writes never reach them (0: no
    /// stall).
    pub replica_lag_ms: u64,
    /// AOF `appendfsync always` instead of `everysec` (Redis restart).
    pub fsync_always: bool,
    /// Orders are created with `dispatch: now` (else `queued`).
    pub dispatch_now: bool,
    /// Dispatch lock TTL of the instances, ms.
    pub lock_ttl_ms: u64,
}

impl FaultOptions {
    /// Defaults for `scenario` (the figures' settings in docs/RELIABILITY.md).
    pub fn new(scenario: Scenario, binary: PathBuf) -> Self {
        Self {
            scenario,
            binary,
            duration: Duration::from_secs(30),
            concurrency: 8,
            drivers: 2_000,
            fault_at: Duration::from_secs(10),
            fault_every: Duration::from_secs(4),
            min_replicas_to_write: 0,
            wait_replicas: 0,
            replica_lag_ms: 0,
            fsync_always: false,
            dispatch_now: !matches!(scenario, Scenario::KillInstances | Scenario::StopInstance),
            lock_ttl_ms: 1_000,
        }
    }

    /// `appendfsync` of the standalone Redis.
    fn fsync_policy(&self) -> &'static str {
        if self.fsync_always {
            "always"
        } else {
            "everysec"
        }
    }

    /// The standalone Redis (its AOF on for the restart scenario), in `dir`.
    fn redis_options(&self, dir: &std::path::Path) -> LocalRedisOptions {
        LocalRedisOptions {
            data_dir: dir.join("redis"),
            appendonly: self.scenario == Scenario::RedisRestart,
            extra_args: vec!["--appendfsync".into(), self.fsync_policy().into()],
        }
    }
}

/// What a fault run measured.
#[derive(Debug, Clone, Serialize)]
pub struct FaultReport {
    /// The scenario.
    pub scenario: Scenario,
    /// Orders whose creation was attempted.
    pub orders: usize,
    /// Orders created with a 201.
    pub acknowledged: usize,
    /// Orders seen delivered at the end.
    pub delivered: usize,
    /// Acknowledged orders (or acknowledged steps) missing afterwards.
    pub acknowledged_lost: usize,
    /// Ids of the lost orders (first 20).
    pub lost_examples: Vec<String>,
    /// Acknowledged orders that could not be delivered (lost ones excluded), even after the
    /// load, when the client finishes the orders it gave up on at their deadline.
    pub stuck: usize,
    /// Orders whose client gave up at its deadline (the service unavailable longer than its
    /// patience) and that were delivered after the load, once the service answered again.
    pub finished_after_recovery: usize,
    /// The stuck orders, with their state (first 20).
    pub stuck_examples: Vec<String>,
    /// Orders whose delivery was never acknowledged (its answer was a 5xx, the retry a 409) but
    /// that the client then read back as delivered, and that a failover rolled back: the read
    /// saw a write the promoted replica never got. Not an acknowledged write; not stuck either,
    /// since the client stopped on what it read.
    pub rolled_back_reads: usize,
    /// Client-side double assignments: a driver acknowledged on two orders at once (neither of
    /// which lost an acknowledged write).
    pub double_assignments_client: usize,
    /// Client-visible double assignments where one of the two orders had acknowledged writes
    /// lost (e.g. by a failover): the driver was told of an order the store then forgot.
    pub double_assignments_with_lost_writes: usize,
    /// Server-side invariant violations (I1–I4) over the event history (after recovery for
    /// the scenarios that lose data).
    pub invariant_violations: usize,
    /// The first violations, described.
    pub violations: Vec<String>,
    /// Events replayed for the invariant check.
    pub events_checked: usize,
    /// `409 stale-fencing-token` answers the drivers got.
    pub stale_fence_answers: usize,
    /// `geodispatch_fence_rejections_total` + `geodispatch_lock_lost_total` of the instances
    /// alive at the end.
    pub fence_and_lock_rejections: f64,
    /// Requests that failed (5xx or no answer).
    pub failed_requests: usize,
    /// Requests answered.
    pub requests: usize,
    /// Seconds from the first fault (for a stalled-replica failover: the stall) to the last
    /// failed request (0 when none failed).
    pub unavailable_s: f64,
    /// Milliseconds during which `/readyz` of instance 0 did not answer 200 (polled every
    /// 100 ms; a poll that hangs counts for as long as it hangs).
    pub readyz_down_ms: u64,
    /// Faults injected.
    pub faults: usize,
    /// Notes of the scenario (failover time, ports).
    pub notes: Vec<String>,
}

/// One child `geodispatch serve` on a free port, with the given environment (settings).
pub struct Instance {
    port: u16,
    env: Vec<(String, String)>,
    binary: PathBuf,
    child: Option<tokio::process::Child>,
}

impl Instance {
    /// Start `binary serve` and wait until `/readyz` answers 200.
    pub async fn start(
        binary: &std::path::Path,
        env: Vec<(String, String)>,
    ) -> anyhow::Result<Self> {
        let port = free_port()?;
        let mut inst = Self {
            port,
            env,
            binary: binary.to_owned(),
            child: None,
        };
        inst.spawn().await?;
        Ok(inst)
    }

    /// `host:port` it listens on.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let mut cmd = tokio::process::Command::new(&self.binary);
        cmd.arg("serve")
            .envs(self.env.iter().cloned())
            .env("GEODISPATCH_LISTEN", self.addr())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        geodispatch::store::local::die_with_parent(&mut cmd);
        self.child = Some(
            cmd.spawn()
                .with_context(|| format!("starting {} serve", self.binary.display()))?,
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut c) = Conn::open(&self.addr()).await
                && let Ok((200, _)) = c.request("GET", "/readyz", None).await
            {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "instance on {} never became ready",
                self.addr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn signal(&self, sig: i32) {
        geodispatch::store::local::signal_child(self.child.as_ref(), sig);
    }

    /// SIGKILL it (and wait for it to exit).
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }
}

/// One order's life as the client saw it.
#[derive(Debug, Clone, Default)]
struct Record {
    id: String,
    created: bool,
    driver: Option<String>,
    fence: u64,
    /// Last acknowledged state (a 201 or 200 answer; a state only read back does not count):
    /// 0 none, 1 offered, 2 accepted, 3 picked up, 4 delivered.
    acked: u8,
    /// When the accept was acknowledged (200), by the client's clock.
    accepted_ms: Option<u64>,
    /// When the delivery that was acknowledged (200) was sent, by the client's clock: its write
    /// happened after, while the answer may come much later (an instance paused between the
    /// write and its answer), so this is the latest time the client can prove the driver was
    /// still held.
    delivered_ms: Option<u64>,
    /// A step was applied but not acknowledged (seen only by reading the order back).
    unacknowledged_step: bool,
    started_ms: u64,
    /// Why the client stopped driving the order before it was delivered.
    stopped: Stop,
}

/// Why a client loop stopped driving an order (other than a delivery it saw answered).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Stop {
    #[default]
    Running,
    /// Its deadline passed (retries included).
    Deadline,
    /// Reading the order back failed.
    ReadFailed,
    /// The order ended otherwise (cancelled, failed).
    Ended,
    /// The order read back as delivered after an unanswered delivery.
    ReadDelivered,
    /// A step was refused and the order had not moved (a stale fence).
    Refused,
    /// A step was answered with this status.
    Status(u16),
}

/// The driver's step from each state of an order it holds, in order, up to delivery.
const STEPS: [(&str, &str); 3] = [
    ("offered", "accept"),
    ("accepted", "pickup"),
    ("picked_up", "deliver"),
];

#[derive(Default)]
struct Shared {
    records: Vec<Record>,
    errors: Vec<u64>,
    requests: usize,
    stale_fence: usize,
}

struct Loop {
    addrs: Vec<String>,
    at: usize,
    conn: Option<Conn>,
    start: Instant,
    shared: Arc<Mutex<Shared>>,
    /// Whether the last [`Loop::step`] sent an attempt that got no answer (or a 5xx) before
    /// its final answer.
    step_retried: bool,
}

impl Loop {
    fn ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Send until answered with a non-5xx status, moving to the next instance after a dead
    /// connection; `None` after `deadline`.
    async fn step(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        deadline: Instant,
    ) -> Option<(u16, Value)> {
        let body = body.map(|b| serde_json::to_vec(b).expect("json"));
        self.step_retried = false;
        while Instant::now() < deadline {
            if self.conn.is_none() {
                match Conn::open(&self.addrs[self.at]).await {
                    Ok(c) => self.conn = Some(c),
                    Err(_) => {
                        self.shared.lock().expect("lock").errors.push(self.ms());
                        self.at = (self.at + 1) % self.addrs.len();
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                }
            }
            let conn = self.conn.as_mut().expect("connected");
            let answer = tokio::time::timeout(
                Duration::from_secs(5),
                conn.request(method, path, body.as_deref()),
            )
            .await;
            match answer {
                Ok(Ok((status, bytes))) => {
                    let json: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
                    let now = self.ms();
                    let stale = status == 409
                        && json["type"]
                            .as_str()
                            .is_some_and(|t| t.ends_with("stale-fencing-token"));
                    {
                        let mut s = self.shared.lock().expect("lock");
                        s.requests += 1;
                        s.stale_fence += usize::from(stale);
                        if status >= 500 {
                            s.errors.push(now);
                        }
                    }
                    if status >= 500 {
                        self.step_retried = true;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    return Some((status, json));
                }
                _ => {
                    self.shared.lock().expect("lock").errors.push(self.ms());
                    self.step_retried = true;
                    self.conn = None;
                    self.at = (self.at + 1) % self.addrs.len();
                }
            }
        }
        None
    }

    /// Drive `order` from its state to delivery with the driver and fencing token it holds
    /// (waiting while it is pending for a new offer), until `deadline`; the state it ended in,
    /// or `None` when it could not be read.
    async fn finish(&mut self, mut order: Value, deadline: Instant) -> Option<String> {
        let id = order["order_id"].as_str().unwrap_or_default().to_owned();
        loop {
            let state = order["state"].as_str().unwrap_or_default().to_owned();
            let op = match STEPS.iter().find(|(s, _)| *s == state) {
                Some((_, op)) => *op,
                None if state == "pending" && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    order = self.read_order(&id, deadline).await?.1;
                    continue;
                }
                None => return Some(state),
            };
            let body =
                json!({"driver_id": order["driver_id"], "fencing_token": order["fencing_token"]});
            match self.order_step(&id, op, &body, deadline).await? {
                (200, o) => order = o,
                _ => {
                    if Instant::now() >= deadline {
                        return Some(state);
                    }
                    order = self.read_order(&id, deadline).await?.1;
                }
            }
        }
    }

    /// `POST /v1/orders/{id}/{op}` with `body` until answered (see [`Loop::step`]).
    async fn order_step(
        &mut self,
        id: &str,
        op: &str,
        body: &Value,
        deadline: Instant,
    ) -> Option<(u16, Value)> {
        self.step(
            "POST",
            &format!("/v1/orders/{id}/{op}"),
            Some(body),
            deadline,
        )
        .await
    }

    /// `GET /v1/orders/{id}` until answered (see [`Loop::step`]).
    async fn read_order(&mut self, id: &str, deadline: Instant) -> Option<(u16, Value)> {
        self.step("GET", &format!("/v1/orders/{id}"), None, deadline)
            .await
    }

    async fn run_order(&mut self, id: String, pickup: (f64, f64), now: bool) -> Record {
        let mut rec = Record {
            id: id.clone(),
            started_ms: self.ms(),
            ..Default::default()
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        let body = json!({"order_id": id, "pickup": {"lat": pickup.0, "lon": pickup.1},
                          "dispatch": if now { "now" } else { "queued" }});
        let Some((status, order)) = self.step("POST", "/v1/orders", Some(&body), deadline).await
        else {
            return rec;
        };
        let mut order = match status {
            201 => {
                rec.created = true;
                rec.acked = state_rank(order["state"].as_str().unwrap_or_default());
                order
            }
            // An earlier attempt was written but its answer lost: not acknowledged.
            409 => match self.read_order(&id, deadline).await {
                Some((200, o)) => o,
                _ => return rec,
            },
            _ => return rec,
        };
        // Drive the order by its state, as a driver app would: wait for the offer (a queue
        // worker, or the retry timer after a failed attempt), then accept, pick up and deliver.
        // A step written but not acknowledged may have been applied (the instance died after
        // writing) or rolled back (a failover lost it): the client follows the state it reads.
        loop {
            if Instant::now() > deadline {
                rec.stopped = Stop::Deadline;
                return rec;
            }
            let state = order["state"].as_str().unwrap_or_default().to_owned();
            if state == "pending" {
                tokio::time::sleep(Duration::from_millis(20)).await;
                match self.read_order(&id, deadline).await {
                    Some((200, o)) => order = o,
                    other => {
                        rec.stopped = if other.is_none() {
                            Stop::Deadline
                        } else {
                            Stop::ReadFailed
                        };
                        return rec;
                    }
                }
                continue;
            }
            // Delivered (only after a lost answer: the loop returns on a 200), cancelled, failed.
            let Some(i) = STEPS.iter().position(|(s, _)| *s == state) else {
                rec.stopped = if state == "delivered" {
                    Stop::ReadDelivered
                } else {
                    Stop::Ended
                };
                return rec;
            };
            let Some(driver) = order["driver_id"].as_str().map(str::to_owned) else {
                return rec;
            };
            let fence = order["fencing_token"].as_u64().unwrap_or(0);
            if rec.driver.as_deref() != Some(driver.as_str()) {
                if rec.accepted_ms.is_some() {
                    // An acknowledged accept was lost: the read-back reports it.
                    return rec;
                }
                rec.driver = Some(driver.clone());
                rec.fence = fence;
            }
            let op = STEPS[i].1;
            let body = json!({"driver_id": driver, "fencing_token": fence});
            let sent_ms = self.ms();
            match self.order_step(&id, op, &body, deadline).await {
                Some((200, o)) => {
                    rec.acked = rec.acked.max(2 + i as u8);
                    // A driver's repeated answer is answered 200 without effect: after an
                    // attempt that got no answer, this 200 may confirm a step applied then, at
                    // a time the client does not know.
                    if self.step_retried {
                        rec.unacknowledged_step = true;
                    }
                    if op == "accept" {
                        rec.accepted_ms = Some(self.ms());
                    }
                    if op == "deliver" {
                        rec.delivered_ms = Some(sent_ms);
                        return rec;
                    }
                    order = o;
                }
                // Applied before its answer was lost, or rolled back: read where it is now.
                Some((409, _)) => match self.read_order(&id, deadline).await {
                    // Refused for its own reasons (a stale fence): give up on this order.
                    Some((200, o)) if o["state"] == state.as_str() => {
                        rec.stopped = Stop::Refused;
                        return rec;
                    }
                    Some((200, o)) => {
                        rec.unacknowledged_step = true;
                        order = o;
                    }
                    _ => {
                        rec.stopped = Stop::ReadFailed;
                        return rec;
                    }
                },
                other => {
                    rec.stopped = match other {
                        None => Stop::Deadline,
                        Some((status, _)) => Stop::Status(status),
                    };
                    return rec;
                }
            }
        }
    }
}

/// The progress of an order state: 0 pending (or ended otherwise), 1 offered, 2 accepted,
/// 3 picked up, 4 delivered.
fn state_rank(state: &str) -> u8 {
    match state {
        "offered" => 1,
        "accepted" => 2,
        "picked_up" => 3,
        "delivered" => 4,
        _ => 0,
    }
}

fn env_for(prefix: &str, opts: &FaultOptions) -> Vec<(String, String)> {
    [
        ("GEODISPATCH_KEY_PREFIX", prefix.to_owned()),
        ("GEODISPATCH_AUTH_ENABLED", "false".to_owned()),
        ("GEODISPATCH_RATE_LIMITS_ENABLED", "false".to_owned()),
        ("GEODISPATCH_HTTP_WORKERS", "1".to_owned()),
        ("GEODISPATCH_DISPATCH_WORKERS", "2".to_owned()),
        ("GEODISPATCH_DRIVER_TTL_MS", "3600000".to_owned()),
        ("GEODISPATCH_SWEEP_INTERVAL_MS", "3600000".to_owned()),
        ("GEODISPATCH_QUEUE_CLAIM_IDLE_MS", "1000".to_owned()),
        ("GEODISPATCH_TIMER_INTERVAL_MS", "100".to_owned()),
        ("GEODISPATCH_DISPATCH_RETRY_MS", "300".to_owned()),
        ("GEODISPATCH_OFFER_TTL_MS", "10000".to_owned()),
        ("GEODISPATCH_LOCK_TTL_MS", opts.lock_ttl_ms.to_string()),
        // Keep the whole event history, so the invariant check sees every order.
        ("GEODISPATCH_EVENTS_MAXLEN", "10000000".to_owned()),
        ("GEODISPATCH_REDIS_TIMEOUT_MS", "500".to_owned()),
        (
            "GEODISPATCH_REDIS_WAIT_REPLICAS",
            opts.wait_replicas.to_string(),
        ),
        ("GEODISPATCH_LOG_FORMAT", "text".to_owned()),
        ("RUST_LOG", "error".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

async fn metric_sum(addr: &str, names: &[&str]) -> f64 {
    let Ok(mut c) = Conn::open(addr).await else {
        return 0.0;
    };
    let Ok((200, body)) = c.request("GET", "/metrics", None).await else {
        return 0.0;
    };
    String::from_utf8_lossy(body)
        .lines()
        .filter(|l| names.iter().any(|n| l.starts_with(n)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Run one fault scenario and report what it cost.
pub async fn faults(opts: FaultOptions) -> anyhow::Result<FaultReport> {
    let dir = std::env::temp_dir().join(format!("gd-faults-{}", uuid::Uuid::new_v4()));
    let prefix = "faults";
    let mut env = env_for(prefix, &opts);
    let mut notes = Vec::new();

    // The Redis side.
    let mut sentinel = None;
    let mut redis = None;
    let topology = match opts.scenario {
        Scenario::SentinelFailover => {
            let mut args = Vec::new();
            if opts.min_replicas_to_write > 0 {
                args.extend([
                    "--min-replicas-to-write".to_owned(),
                    opts.min_replicas_to_write.to_string(),
                    "--min-replicas-max-lag".to_owned(),
                    "1".to_owned(),
                ]);
            }
            let group = LocalSentinelGroup::start(&dir, 2, 3, args).await?;
            env.push(("GEODISPATCH_REDIS_SENTINELS".into(), group.sentinel_addrs()));
            let t = Topology::Sentinel {
                sentinels: geodispatch::store::url_list(&group.sentinel_addrs()),
                master: crate::topology::MASTER_NAME.to_owned(),
            };
            sentinel = Some(group);
            t
        }
        _ => {
            let r = LocalRedis::start(opts.redis_options(&dir)).await?;
            env.push(("GEODISPATCH_REDIS_URL".into(), r.url()));
            let t = Topology::Standalone(r.url());
            redis = Some(r);
            t
        }
    };
    let store = Store::connect_to(&topology, prefix, Duration::from_secs(2), 8)?;

    // The service instances.
    let count = match opts.scenario {
        Scenario::KillInstances | Scenario::StopInstance => 3,
        _ => 1,
    };
    let mut instances = Vec::with_capacity(count);
    for _ in 0..count {
        instances.push(Instance::start(&opts.binary, env.clone()).await?);
    }
    let addrs: Vec<String> = instances.iter().map(Instance::addr).collect();

    // The fleet, in the central 10×10 km of Paris.
    let mut rng = SplitMix64::new(7);
    let drivers: Vec<(String, f64, f64, &'static str)> = (0..opts.drivers)
        .map(|i| {
            let (lat, lon) = crate::fleet::point_in_square(&mut rng, 5.0);
            (format!("f{i}"), lat, lon, "car")
        })
        .collect();
    crate::fleet::load_fleet(&addrs[0], &drivers, 2).await?;

    // The load.
    let start = Instant::now();
    let shared = Arc::new(Mutex::new(Shared::default()));
    let mut loops = Vec::new();
    for w in 0..opts.concurrency {
        let mut l = Loop {
            addrs: addrs.clone(),
            at: w % addrs.len(),
            conn: None,
            start,
            shared: shared.clone(),
            step_retried: false,
        };
        let duration = opts.duration;
        let now = opts.dispatch_now;
        loops.push(tokio::spawn(async move {
            let mut rng = SplitMix64::new(1_000 + w as u64);
            let mut n = 0;
            while start.elapsed() < duration {
                n += 1;
                let pickup = crate::fleet::point_in_square(&mut rng, 4.0);
                let rec = l.run_order(format!("o{w}-{n}"), pickup, now).await;
                l.shared.lock().expect("lock").records.push(rec);
            }
        }));
    }
    // /readyz of instance 0, every 100 ms.
    let stop_polling = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let addr = addrs[0].clone();
        let stop = stop_polling.clone();
        tokio::spawn(async move {
            let mut down = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let polled = Instant::now();
                let ok = match Conn::open(&addr).await {
                    Ok(mut c) => matches!(
                        tokio::time::timeout(
                            Duration::from_secs(2),
                            c.request("GET", "/readyz", None)
                        )
                        .await,
                        Ok(Ok((200, _)))
                    ),
                    Err(_) => false,
                };
                tokio::time::sleep(Duration::from_millis(100)).await;
                if !ok {
                    // The whole time since this poll started (a hung poll counts in full).
                    down += polled.elapsed().as_millis() as u64;
                }
            }
            down
        })
    };

    // The faults.
    let mut faults = 0;
    let mut first_fault_ms = None;
    let mut recovered_ms = 0u64;
    match opts.scenario {
        Scenario::SentinelFailover => {
            tokio::time::sleep(opts.fault_at).await;
            let group = sentinel.as_mut().expect("sentinel group");
            let old = group.primary_port().await?;
            // The fault starts with the stall, when there is one.
            first_fault_ms = Some(start.elapsed().as_millis() as u64);
            if opts.replica_lag_ms > 0 {
                for n in group.nodes.iter().filter(|n| n.port() != old) {
                    n.signal(libc::SIGSTOP);
                }
                // A stopped replica's kernel still receives the stream into its socket buffer
                // and would apply it on SIGCONT: the primary also drops the replication links,
                // so that what it acknowledges from now on reaches no replica (a partition).
                let cut: i64 = crate::topology::query(
                    old,
                    &redis::cmd("CLIENT")
                        .arg("KILL")
                        .arg("TYPE")
                        .arg("replica")
                        .clone(),
                )
                .await?;
                tokio::time::sleep(Duration::from_millis(opts.replica_lag_ms)).await;
                notes.push(format!(
                    "replicas stalled (SIGSTOP) and their {cut} replication links cut for {} ms \
                     before the primary was killed",
                    opts.replica_lag_ms
                ));
            }
            let killed_ms = start.elapsed().as_millis() as u64;
            group
                .node_mut(old)
                .context("the primary is one of ours")?
                .kill()
                .await?;
            for n in group.nodes.iter().filter(|n| n.port() != old) {
                n.signal(libc::SIGCONT);
            }
            faults += 1;
            let new = group.wait_failover(old, Duration::from_secs(30)).await?;
            let promoted = start.elapsed().as_millis() as u64;
            notes.push(format!(
                "primary {old} killed at {killed_ms} ms; sentinels promoted {new} at {promoted} ms"
            ));
            recovered_ms = promoted;
        }
        Scenario::RedisRestart => {
            tokio::time::sleep(opts.fault_at).await;
            let r = redis.as_mut().expect("redis");
            first_fault_ms = Some(start.elapsed().as_millis() as u64);
            r.kill().await?;
            faults += 1;
            let port = r.port();
            let restarted = LocalRedis::start_on(port, opts.redis_options(&dir)).await?;
            *r = restarted;
            recovered_ms = start.elapsed().as_millis() as u64;
            notes.push(format!(
                "Redis killed at {} ms, restarted from its AOF (appendfsync {}) and answering at {recovered_ms} ms",
                first_fault_ms.unwrap_or(0),
                opts.fsync_policy()
            ));
        }
        Scenario::KillInstances | Scenario::StopInstance => {
            let mut i = 0;
            while start.elapsed() + opts.fault_every < opts.duration {
                tokio::time::sleep(opts.fault_every).await;
                let n = instances.len();
                let victim = &mut instances[i % n];
                first_fault_ms.get_or_insert(start.elapsed().as_millis() as u64);
                if opts.scenario == Scenario::KillInstances {
                    victim.kill().await;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    victim.spawn().await?;
                } else {
                    victim.signal(libc::SIGSTOP);
                    tokio::time::sleep(Duration::from_millis(opts.lock_ttl_ms * 3)).await;
                    victim.signal(libc::SIGCONT);
                }
                faults += 1;
                i += 1;
            }
        }
    }
    for l in loops {
        l.await?;
    }
    stop_polling.store(true, std::sync::atomic::Ordering::Relaxed);
    let readyz_down_ms = poller.await?;

    // Read every order back.
    let records = std::mem::take(&mut shared.lock().expect("lock").records);
    let (requests, errors, stale_fence) = {
        let s = shared.lock().expect("lock");
        (s.requests, s.errors.clone(), s.stale_fence)
    };
    let mut reader = Loop {
        addrs: addrs.clone(),
        at: 0,
        conn: None,
        start,
        shared: Arc::new(Mutex::new(Shared::default())),
        step_retried: false,
    };
    let mut lost = Vec::new();
    let mut delivered = 0;
    let mut stuck = 0;
    let mut finished_after_recovery = 0;
    let mut stuck_examples = Vec::new();
    let mut rolled_back_reads = 0;
    for r in &records {
        if !r.created && r.acked == 0 {
            continue;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let (order, mut state) = match reader.read_order(&r.id, deadline).await {
            Some((200, o)) => {
                let state = o["state"].as_str().unwrap_or_default().to_owned();
                (o, state)
            }
            Some((404, _)) => {
                lost.push(r.id.clone());
                continue;
            }
            _ => anyhow::bail!("could not read order {} back", r.id),
        };
        // A client that gave up at its deadline (an outage longer than its patience) left the
        // order where it was; as a driver app would once the service answers again, it is
        // driven to delivery now. Only one that cannot be is stuck.
        if r.stopped == Stop::Deadline && state_rank(&state) >= r.acked && state != "delivered" {
            let deadline = Instant::now() + Duration::from_secs(20);
            if let Some(done) = reader.finish(order, deadline).await {
                finished_after_recovery += usize::from(done == "delivered");
                state = done;
            }
        }
        let rank = state_rank(&state);
        if rank < r.acked {
            lost.push(format!(
                "{} (acknowledged step {}, now {state})",
                r.id, r.acked
            ));
        } else if state == "delivered" {
            delivered += 1;
        } else if r.stopped == Stop::ReadDelivered {
            rolled_back_reads += 1;
        } else {
            stuck += 1;
            if stuck_examples.len() < 20 {
                stuck_examples.push(format!(
                    "{} ({state}, client saw step {}, stopped: {:?})",
                    r.id, r.acked, r.stopped
                ));
            }
        }
    }

    let lost_ids: std::collections::HashSet<&str> = lost
        .iter()
        .map(|l| l.split(' ').next().unwrap_or_default())
        .collect();
    let (double_client, double_lost) = client_doubles(&records, &lost_ids);

    // Server-side I1–I4 over the history; after recovery where the fault loses data.
    let history = geodispatch::events::read_history(&store, "paris").await?;
    let after: std::collections::HashSet<&str> = records
        .iter()
        .filter(|r| r.started_ms > recovered_ms)
        .map(|r| r.id.as_str())
        .collect();
    let checked: Vec<_> = if recovered_ms > 0 {
        history
            .into_iter()
            .filter(|e| after.contains(e.order_id.as_str()))
            .collect()
    } else {
        history
    };
    let report = geodispatch::events::check_invariants(&checked);
    let violations = report.double_assignments
        + report.driver_double_orders
        + report.after_terminal
        + report.fence_regressions;

    let mut rejections = 0.0;
    for a in &addrs {
        rejections += metric_sum(
            a,
            &[
                "geodispatch_fence_rejections_total",
                "geodispatch_lock_lost_total",
            ],
        )
        .await;
    }
    let unavailable_s = match (first_fault_ms, errors.iter().max()) {
        (Some(f), Some(&last)) if last >= f => (last - f) as f64 / 1000.0,
        _ => 0.0,
    };
    for mut i in instances {
        i.kill().await;
    }
    if let Some(mut r) = redis {
        let _ = r.kill().await;
    }
    drop(sentinel);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(FaultReport {
        scenario: opts.scenario,
        orders: records.len(),
        acknowledged: records.iter().filter(|r| r.created).count(),
        delivered,
        acknowledged_lost: lost.len(),
        lost_examples: lost.into_iter().take(20).collect(),
        stuck,
        finished_after_recovery,
        stuck_examples,
        rolled_back_reads,
        double_assignments_client: double_client,
        double_assignments_with_lost_writes: double_lost,
        invariant_violations: violations,
        violations: report.violations,
        events_checked: report.events,
        stale_fence_answers: stale_fence,
        fence_and_lock_rejections: rejections,
        failed_requests: errors.len(),
        requests,
        unavailable_s,
        readyz_down_ms,
        faults,
        notes,
    })
}

/// Client-side I2: drivers acknowledged on two orders at once, over the orders whose accept and
/// delivery (or its absence) the client knows the time of, as `(doubles, doubles involving a
/// lost order)`. A driver's hold runs from its accept's answer (the write was before) to the
/// sending of its delivery (the write was after): an overlap of those is a double assignment
/// the client can prove, whatever the delay of an answer.
fn client_doubles(
    records: &[Record],
    lost_ids: &std::collections::HashSet<&str>,
) -> (usize, usize) {
    let mut by_driver: std::collections::HashMap<&str, Vec<(u64, u64, bool)>> = Default::default();
    for r in records.iter().filter(|r| !r.unacknowledged_step) {
        let Some(start) = r.accepted_ms else {
            continue;
        };
        let end = r.delivered_ms.unwrap_or(u64::MAX);
        by_driver
            .entry(r.driver.as_deref().unwrap_or_default())
            .or_default()
            .push((start, end, lost_ids.contains(r.id.as_str())));
    }
    let (mut doubles, mut with_lost) = (0, 0);
    for spans in by_driver.values_mut() {
        spans.sort();
        for w in spans.windows(2).filter(|w| w[1].0 < w[0].1) {
            if w[0].2 || w[1].2 {
                with_lost += 1;
            } else {
                doubles += 1;
            }
        }
    }
    (doubles, with_lost)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(id: &str, driver: &str, accepted_ms: u64, delivery_sent_ms: Option<u64>) -> Record {
        Record {
            id: id.to_owned(),
            driver: Some(driver.to_owned()),
            accepted_ms: Some(accepted_ms),
            delivered_ms: delivery_sent_ms,
            ..Record::default()
        }
    }

    #[test]
    fn a_hold_ends_when_its_delivery_is_sent_so_a_late_answer_proves_no_double() {
        let none = std::collections::HashSet::new();
        // `a`'s delivery was sent at 20; a paused instance answered it only at 50. `b` was
        // accepted at 30: the driver was free by then, whatever the answer's delay.
        let records = [held("a", "d", 10, Some(20)), held("b", "d", 30, Some(40))];
        assert_eq!(client_doubles(&records, &none), (0, 0));
        // `b` accepted (answered) before `a`'s delivery was even sent: provably two at once.
        let records = [held("a", "d", 10, Some(20)), held("b", "d", 15, Some(40))];
        assert_eq!(client_doubles(&records, &none), (1, 0));
        // An order never delivered holds its driver to the end; other drivers do not count.
        let records = [
            held("a", "d", 10, None),
            held("b", "d", 90, None),
            held("c", "e", 12, None),
        ];
        assert_eq!(client_doubles(&records, &none), (1, 0));
        // A double involving a lost order is counted apart.
        let lost = std::collections::HashSet::from(["a"]);
        let records = [held("a", "d", 10, Some(20)), held("b", "d", 15, Some(40))];
        assert_eq!(client_doubles(&records, &lost), (0, 1));
    }
}
