//! `geodispatch-tools sim`: a city simulator that drives a running service over HTTP.
//!
//! Drivers move along random walks inside the city outline and report every `report_every`
//! (one batch request per 1,000 drivers, or one `PUT` each); orders arrive as a Poisson
//! process around hot spots; each driver answers the offers it sees on the event stream
//! (`GET /v1/events`, Server-Sent Events): accept with `accept` probability, reject with
//! `reject`, otherwise ignore it (it expires), and after accepting picks up and delivers after
//! delays. Every request's latency goes into an HDR histogram per operation; at the end the
//! events seen are replayed by [`geodispatch::events::check_invariants`] (double assignments,
//! drivers with two orders, events after an order's end), and every order the service answered
//! 201 must have been seen created, and ended, or still be open when the run stops.
//!
//! Without `--url` the simulator starts its own `redis-server` and the service in-process
//! (protection on, rate limits off: one key would hit the per-key limits).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use geodispatch::app::Application;
use geodispatch::cities::CityIndex;
use geodispatch::config::Settings;
use geodispatch::domain::GeoPoint;
use geodispatch::events::{InvariantReport, OrderEvent, check_invariants};
use geodispatch::store::local::{LocalRedis, LocalRedisOptions};
use geodispatch_testkit::load::Conn;
use geodispatch_testkit::now_ms;
use geodispatch_testkit::rng::SplitMix64;

/// Every knob of a simulation run.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Base URL of a running service (`http://host:port`); `None` starts one in-process.
    pub url: Option<String>,
    /// API key (dispatcher or admin) for a running service.
    pub key: Option<String>,
    /// City to simulate.
    pub city: String,
    /// Number of drivers.
    pub drivers: usize,
    /// How long orders arrive.
    pub duration: Duration,
    /// Interval between two position reports of a driver.
    pub report_every: Duration,
    /// Report positions in batches (`POST /v1/locations/batch`) rather than one `PUT` each.
    pub batch: bool,
    /// Mean order arrivals per second (Poisson).
    pub orders_per_s: f64,
    /// `now` or `queued`.
    pub dispatch: String,
    /// Probability that a driver accepts an offer.
    pub accept: f64,
    /// Probability that a driver rejects an offer (the rest are ignored and expire).
    pub reject: f64,
    /// Delay between accepting and picking up.
    pub pickup_delay: Duration,
    /// Delay between picking up and delivering.
    pub deliver_delay: Duration,
    /// Number of order hot spots.
    pub hotspots: usize,
    /// Spread of the pickups around their hot spot, in km.
    pub spread_km: f64,
    /// Random seed (fleet, walks, arrivals, answers).
    pub seed: u64,
    /// After the arrivals stop, how long to wait for open orders to end.
    pub drain: Duration,
    /// Concurrent HTTP connections for orders and answers.
    pub connections: usize,
    /// Offer time to live of the in-process service (ms).
    pub offer_ttl_ms: u64,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            url: None,
            key: None,
            city: "paris".to_owned(),
            drivers: 1_000,
            duration: Duration::from_secs(30),
            report_every: Duration::from_secs(5),
            batch: true,
            orders_per_s: 10.0,
            dispatch: "now".to_owned(),
            accept: 0.85,
            reject: 0.1,
            pickup_delay: Duration::from_millis(500),
            deliver_delay: Duration::from_millis(1_000),
            hotspots: 5,
            spread_km: 1.5,
            seed: 1,
            drain: Duration::from_secs(30),
            connections: 8,
            offer_ttl_ms: 3_000,
            progress: true,
        }
    }
}

/// Latency and outcome counts of one operation.
#[derive(Debug, Clone, Serialize)]
pub struct OpReport {
    /// Requests answered 2xx.
    pub ok: u64,
    /// Requests answered otherwise.
    pub failed: u64,
    /// Successful requests per second of the run.
    pub per_s: f64,
    /// Latency percentiles in ms.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
}

/// Orders by how they ended.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OrderCounts {
    /// Answered 201.
    pub created: u64,
    /// Delivered.
    pub delivered: u64,
    /// Failed (no driver after the configured attempts).
    pub failed: u64,
    /// Cancelled.
    pub cancelled: u64,
    /// Still open when the run stopped (after the drain time).
    pub open_at_end: u64,
    /// States of the orders still open at the end (read back from the service).
    pub open_states: HashMap<String, u64>,
    /// Answered 201 but never seen on the event stream: lost.
    pub lost: u64,
    /// Offers seen, rejected by the simulated drivers, and expired.
    pub offers: u64,
    /// Offers the simulated drivers rejected.
    pub rejected: u64,
    /// Offers that expired unanswered.
    pub expired: u64,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct SimReport {
    /// Seconds orders arrived.
    pub duration_s: f64,
    /// Drivers simulated.
    pub drivers: usize,
    /// Offered order rate.
    pub orders_per_s: f64,
    /// Per operation: positions, create, accept, reject, pickup, deliver.
    pub ops: HashMap<String, OpReport>,
    /// Failed requests by operation, status and problem type.
    pub errors: HashMap<String, u64>,
    /// Orders.
    pub orders: OrderCounts,
    /// The invariant check over every event seen.
    pub invariants: InvariantReport,
}

impl SimReport {
    /// No invariant violation, no lost order.
    pub fn ok(&self) -> bool {
        self.invariants.ok() && self.orders.lost == 0
    }
}

#[derive(Default)]
struct Stats {
    hist: HashMap<&'static str, Histogram<u64>>,
    ok: HashMap<&'static str, u64>,
    failed: HashMap<&'static str, u64>,
    errors: HashMap<String, u64>,
}

impl Stats {
    fn record(&mut self, op: &'static str, started: Instant, status: u16, body: &[u8]) {
        let h = self
            .hist
            .entry(op)
            .or_insert_with(|| Histogram::new_with_bounds(1, 60_000_000, 3).expect("bounds"));
        let _ = h.record(started.elapsed().as_micros().max(1) as u64);
        if (200..300).contains(&status) {
            *self.ok.entry(op).or_default() += 1;
        } else {
            *self.failed.entry(op).or_default() += 1;
            let kind = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| {
                    v["type"]
                        .as_str()
                        .map(|t| t.rsplit('/').next().unwrap_or(t).to_owned())
                })
                .unwrap_or_default();
            *self
                .errors
                .entry(format!("{op} {status} {kind}"))
                .or_default() += 1;
        }
    }
}

type Shared<T> = Arc<Mutex<T>>;

/// An in-process service for the run.
struct Local {
    redis: LocalRedis,
    handle: actix_web::dev::ServerHandle,
    dir: std::path::PathBuf,
}

const LOCAL_KEY: &str = "sim-local-admin-key-0123456789";

async fn start_local(opts: &SimOptions) -> anyhow::Result<(Local, String)> {
    let dir = std::env::temp_dir().join(format!("gd-sim-{}", uuid::Uuid::new_v4()));
    let redis = LocalRedis::start(LocalRedisOptions {
        data_dir: dir.join("redis"),
        appendonly: false,
        extra_args: vec![],
    })
    .await?;
    let settings = Settings {
        listen: "127.0.0.1:0".into(),
        key_prefix: "sim".into(),
        admin_key: Some(LOCAL_KEY.into()),
        rate_limits_enabled: false,
        offer_ttl_ms: opts.offer_ttl_ms,
        dispatch_retry_ms: 1_000,
        dispatch_max_attempts: 30,
        events_maxlen: 10_000_000,
        http_workers: 2,
        ..Settings::default()
    };
    let app = Application::build(settings, &redis.url(), false)?;
    let addr = format!("127.0.0.1:{}", app.port());
    let handle = app.handle();
    tokio::spawn(app.run_until_stopped());
    Ok((Local { redis, handle, dir }, addr))
}

/// Read the city's event stream (SSE over HTTP/1.1 chunked encoding) into `tx` until `stop`.
pub(crate) async fn follow_events(
    addr: String,
    key: Option<String>,
    city: String,
    tx: mpsc::UnboundedSender<OrderEvent>,
    connected: tokio::sync::oneshot::Sender<()>,
) -> anyhow::Result<()> {
    let stream = tokio::net::TcpStream::connect(&addr).await?;
    let mut stream = BufReader::new(stream);
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "GET /v1/events?city={city} HTTP/1.1\r\nHost: {addr}\r\n{auth}Accept: text/event-stream\r\n\r\n"
    );
    stream.get_mut().write_all(head.as_bytes()).await?;
    let mut line = String::new();
    stream.read_line(&mut line).await?;
    if !line.contains(" 200 ") {
        bail!("GET /v1/events answered {}", line.trim());
    }
    loop {
        line.clear();
        stream.read_line(&mut line).await?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
    }
    let _ = connected.send(());
    let mut buf = String::new();
    loop {
        line.clear();
        if stream.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let size = usize::from_str_radix(line.trim(), 16).context("chunk size")?;
        if size == 0 {
            return Ok(());
        }
        let mut chunk = vec![0u8; size + 2];
        stream.read_exact(&mut chunk).await?;
        buf.push_str(&String::from_utf8_lossy(&chunk[..size]));
        while let Some(cut) = buf.find("\n\n") {
            let frame: String = buf.drain(..cut + 2).collect();
            if let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data: "))
                && let Ok(event) = serde_json::from_str::<OrderEvent>(data)
                && tx.send(event).is_err()
            {
                return Ok(());
            }
        }
    }
}

/// A job for the request workers.
enum Job {
    Create {
        id: String,
        lat: f64,
        lon: f64,
    },
    Answer {
        order: String,
        op: &'static str,
        driver: String,
        fence: u64,
        then: Vec<(&'static str, Duration)>,
    },
}

/// What a request worker shares with the run.
#[derive(Clone)]
struct WorkerCtx {
    addr: String,
    key: Option<String>,
    dispatch: String,
    jobs: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Job>>>,
    again: mpsc::UnboundedSender<Job>,
    stats: Shared<Stats>,
    created: Shared<HashSet<String>>,
    open: Shared<HashSet<String>>,
}

async fn worker(ctx: WorkerCtx) -> anyhow::Result<()> {
    let WorkerCtx {
        addr,
        key,
        dispatch,
        jobs,
        again,
        stats,
        created,
        open,
    } = ctx;
    let mut conn = Conn::open(&addr).await?.with_bearer(key.as_deref());
    loop {
        let job = { jobs.lock().await.recv().await };
        let Some(job) = job else { return Ok(()) };
        match job {
            Job::Create { id, lat, lon } => {
                let body = format!(
                    "{{\"order_id\":\"{id}\",\"pickup\":{{\"lat\":{lat},\"lon\":{lon}}},\"dispatch\":\"{dispatch}\"}}"
                );
                let t = Instant::now();
                let (status, answer) = match conn
                    .request("POST", "/v1/orders", Some(body.as_bytes()))
                    .await
                {
                    Ok((s, b)) => (s, b.to_vec()),
                    Err(_) => {
                        conn = Conn::open(&addr).await?.with_bearer(key.as_deref());
                        (0, Vec::new())
                    }
                };
                stats
                    .lock()
                    .expect("not poisoned")
                    .record("create", t, status, &answer);
                if status == 201 {
                    created.lock().expect("not poisoned").insert(id);
                } else {
                    open.lock().expect("not poisoned").remove(&id);
                }
            }
            Job::Answer {
                order,
                op,
                driver,
                fence,
                mut then,
            } => {
                let body = format!("{{\"driver_id\":\"{driver}\",\"fencing_token\":{fence}}}");
                let t = Instant::now();
                let (status, answer) = match conn
                    .request(
                        "POST",
                        &format!("/v1/orders/{order}/{op}"),
                        Some(body.as_bytes()),
                    )
                    .await
                {
                    Ok((s, b)) => (s, b.to_vec()),
                    Err(_) => {
                        conn = Conn::open(&addr).await?.with_bearer(key.as_deref());
                        (0, Vec::new())
                    }
                };
                stats
                    .lock()
                    .expect("not poisoned")
                    .record(op, t, status, &answer);
                if status == 200 && !then.is_empty() {
                    let (next, delay) = then.remove(0);
                    let again = again.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let _ = again.send(Job::Answer {
                            order,
                            op: next,
                            driver,
                            fence,
                            then,
                        });
                    });
                }
            }
        }
    }
}

/// A driver on its random walk.
struct Walker {
    id: String,
    lat: f64,
    lon: f64,
    heading: f64,
    speed: f64,
}

fn step(w: &mut Walker, rng: &mut SplitMix64, seconds: f64, cities: &CityIndex, city: &str) {
    w.heading += (rng.next_f64() - 0.5) * 1.2;
    let d = w.speed * seconds;
    let lat = w.lat + d * w.heading.cos() / 111_320.0;
    let lon = w.lon + d * w.heading.sin() / (111_320.0 * w.lat.to_radians().cos());
    let inside = cities
        .resolve(GeoPoint { lat, lon })
        .is_some_and(|c| c.id.as_str() == city);
    if inside {
        w.lat = lat;
        w.lon = lon;
    } else {
        w.heading += std::f64::consts::PI;
    }
}

fn point_near(rng: &mut SplitMix64, lat: f64, lon: f64, km: f64) -> (f64, f64) {
    // Gaussian-ish spread: the mean of three uniforms.
    let mut g = || (rng.next_f64() + rng.next_f64() + rng.next_f64()) / 1.5 - 1.0;
    let dlat = g() * km / 111.32;
    let dlon = g() * km / (111.32 * lat.to_radians().cos());
    (lat + dlat, lon + dlon)
}

fn random_point_in(rng: &mut SplitMix64, cities: &CityIndex, city: &str) -> (f64, f64) {
    let c = cities.get(city).expect("checked");
    let b = c.bbox;
    loop {
        let lat = b.min_lat + rng.next_f64() * (b.max_lat - b.min_lat);
        let lon = b.min_lon + rng.next_f64() * (b.max_lon - b.min_lon);
        if c.contains(GeoPoint { lat, lon }) {
            return (lat, lon);
        }
    }
}

/// Run one simulation and report what it measured.
pub async fn run(opts: SimOptions) -> anyhow::Result<SimReport> {
    let cities = Arc::new(CityIndex::load(None)?);
    if cities.get(&opts.city).is_none() {
        bail!("unknown city {:?}", opts.city);
    }
    if opts.dispatch != "now" && opts.dispatch != "queued" {
        bail!("dispatch is now or queued");
    }
    if !(0.0..=1.0).contains(&(opts.accept + opts.reject)) || opts.accept < 0.0 || opts.reject < 0.0
    {
        bail!("accept and reject are probabilities that add up to at most 1");
    }
    let (local, addr, key) = match &opts.url {
        Some(url) => (None, address_of(url), opts.key.clone()),
        None => {
            let (local, addr) = start_local(&opts).await?;
            (Some(local), addr, Some(LOCAL_KEY.to_owned()))
        }
    };
    let mut rng = SplitMix64::new(opts.seed);
    let city = opts.city.clone();

    // The fleet, placed and reported once before the clock starts.
    let mut walkers: Vec<Walker> = (0..opts.drivers)
        .map(|i| {
            let (lat, lon) = random_point_in(&mut rng, &cities, &city);
            Walker {
                id: format!("sim-{i:06}"),
                lat,
                lon,
                heading: rng.next_f64() * std::f64::consts::TAU,
                speed: 4.0 + rng.next_f64() * 10.0,
            }
        })
        .collect();
    let stats: Shared<Stats> = Arc::default();
    let mut reporter_conn = Conn::open(&addr).await?.with_bearer(key.as_deref());
    report_positions(&mut reporter_conn, &walkers, true, &stats).await?;

    // Events first, so no offer is missed.
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    let (conn_tx, conn_rx) = tokio::sync::oneshot::channel();
    let follower = tokio::spawn(follow_events(
        addr.clone(),
        key.clone(),
        city.clone(),
        ev_tx,
        conn_tx,
    ));
    tokio::time::timeout(Duration::from_secs(10), conn_rx)
        .await
        .context("the event stream did not open")?
        .context("the event stream closed")?;

    let (job_tx, job_rx) = mpsc::unbounded_channel::<Job>();
    let job_rx = Arc::new(tokio::sync::Mutex::new(job_rx));
    let created: Shared<HashSet<String>> = Arc::default();
    let open: Shared<HashSet<String>> = Arc::default();
    let mut workers = Vec::new();
    for _ in 0..opts.connections.max(1) {
        workers.push(tokio::spawn(worker(WorkerCtx {
            addr: addr.clone(),
            key: key.clone(),
            dispatch: opts.dispatch.clone(),
            jobs: job_rx.clone(),
            again: job_tx.clone(),
            stats: stats.clone(),
            created: created.clone(),
            open: open.clone(),
        })));
    }

    let progress = opts.progress.then(|| {
        let bar = indicatif::ProgressBar::new(opts.duration.as_secs().max(1));
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} s  {msg}",
            )
            .expect("template")
            .progress_chars("=> "),
        );
        bar
    });

    // Positions: every report_every, move and report every driver.
    let started = Instant::now();
    let deadline = started + opts.duration;
    let stop_all = started + opts.duration + opts.drain;
    let positions = {
        let stats = stats.clone();
        let cities = cities.clone();
        let city = city.clone();
        let batch = opts.batch;
        let every = opts.report_every;
        let mut rng = SplitMix64::new(opts.seed ^ 0xA5A5);
        let reporter_addr = addr.clone();
        let reporter_key = key.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            while Instant::now() < stop_all {
                tick.tick().await;
                for w in walkers.iter_mut() {
                    step(w, &mut rng, every.as_secs_f64(), &cities, &city);
                }
                if let Err(err) =
                    report_positions(&mut reporter_conn, &walkers, batch, &stats).await
                {
                    // An idle keep-alive connection may have been closed by the server: reopen.
                    tracing::debug!(error = %err, "position report failed; reconnecting");
                    match Conn::open(&reporter_addr).await {
                        Ok(c) => reporter_conn = c.with_bearer(reporter_key.as_deref()),
                        Err(err) => {
                            tracing::warn!(error = %err, "cannot reconnect the position reporter")
                        }
                    }
                }
            }
        })
    };

    // Orders: a Poisson process around hot spots, until the deadline.
    let hotspots: Vec<(f64, f64)> = (0..opts.hotspots.max(1))
        .map(|_| random_point_in(&mut rng, &cities, &city))
        .collect();
    let mut events: Vec<OrderEvent> = Vec::new();
    let mut next_order = Instant::now();
    let mut n = 0u64;
    let mut answer_rng = SplitMix64::new(opts.seed ^ 0x5A5A);
    let run_tag = format!("{:x}", uuid::Uuid::new_v4().as_u128() as u32);
    let mut last_progress = Instant::now();
    loop {
        let now = Instant::now();
        let open_now = open.lock().expect("not poisoned").len();
        if now >= deadline && (open_now == 0 || now >= stop_all) {
            break;
        }
        if now >= next_order && now < deadline {
            n += 1;
            let (hlat, hlon) =
                hotspots[(rng.next_f64() * hotspots.len() as f64) as usize % hotspots.len()];
            let mut pick = point_near(&mut rng, hlat, hlon, opts.spread_km);
            for _ in 0..20 {
                let inside = cities
                    .resolve(GeoPoint {
                        lat: pick.0,
                        lon: pick.1,
                    })
                    .is_some_and(|c| c.id.as_str() == city);
                if inside {
                    break;
                }
                pick = point_near(&mut rng, hlat, hlon, opts.spread_km);
            }
            let (lat, lon) = pick;
            let id = format!("sim-{run_tag}-{n}");
            open.lock().expect("not poisoned").insert(id.clone());
            let _ = job_tx.send(Job::Create { id, lat, lon });
            let gap = -(1.0 - rng.next_f64()).ln() / opts.orders_per_s.max(0.001);
            next_order += Duration::from_secs_f64(gap);
        }
        let wait = if now < deadline {
            next_order
                .saturating_duration_since(now)
                .min(Duration::from_millis(50))
        } else {
            Duration::from_millis(50)
        };
        match tokio::time::timeout(wait, ev_rx.recv()).await {
            Ok(Some(e)) => {
                let ours = e.order_id.starts_with(&format!("sim-{run_tag}-"));
                if ours && e.kind == "offered" {
                    let roll = answer_rng.next_f64();
                    if roll < opts.accept {
                        let _ = job_tx.send(Job::Answer {
                            order: e.order_id.clone(),
                            op: "accept",
                            driver: e.driver_id.clone(),
                            fence: e.fencing_token,
                            then: vec![
                                ("pickup", opts.pickup_delay),
                                ("deliver", opts.deliver_delay),
                            ],
                        });
                    } else if roll < opts.accept + opts.reject {
                        let _ = job_tx.send(Job::Answer {
                            order: e.order_id.clone(),
                            op: "reject",
                            driver: e.driver_id.clone(),
                            fence: e.fencing_token,
                            then: vec![],
                        });
                    }
                }
                if ours && matches!(e.kind.as_str(), "delivered" | "cancelled" | "failed") {
                    open.lock().expect("not poisoned").remove(&e.order_id);
                }
                events.push(e);
            }
            Ok(None) => bail!("the event stream ended"),
            Err(_) => {}
        }
        if let Some(bar) = &progress
            && last_progress.elapsed() > Duration::from_millis(200)
        {
            last_progress = Instant::now();
            bar.set_position(started.elapsed().as_secs().min(opts.duration.as_secs()));
            let s = stats.lock().expect("not poisoned");
            let errors: u64 = s.failed.values().sum();
            bar.set_message(format!(
                "orders {n}, open {open_now}, events {}, failed requests {errors}",
                events.len()
            ));
        }
    }
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    let elapsed = started
        .elapsed()
        .min(opts.duration.max(Duration::from_millis(1)));
    positions.abort();
    follower.abort();
    drop(job_tx);
    for w in workers {
        w.abort();
    }
    // Events still buffered.
    while let Ok(e) = ev_rx.try_recv() {
        events.push(e);
    }

    let still_open: Vec<String> = {
        let open = open.lock().expect("not poisoned");
        let created = created.lock().expect("not poisoned");
        created
            .iter()
            .filter(|id| open.contains(*id))
            .cloned()
            .collect()
    };
    let mut open_states: HashMap<String, u64> = HashMap::new();
    if !still_open.is_empty() {
        let mut conn = Conn::open(&addr).await?.with_bearer(key.as_deref());
        for id in still_open.iter().take(100) {
            let state = match conn.request("GET", &format!("/v1/orders/{id}"), None).await {
                Ok((200, body)) => serde_json::from_slice::<serde_json::Value>(body)
                    .ok()
                    .and_then(|v| v["state"].as_str().map(str::to_owned))
                    .unwrap_or_default(),
                _ => "unreadable".to_owned(),
            };
            *open_states.entry(state).or_default() += 1;
        }
    }
    let invariants = check_invariants(&events);
    let created = created.lock().expect("not poisoned").clone();
    let seen_created: HashSet<&str> = events
        .iter()
        .filter(|e| e.kind == "created")
        .map(|e| e.order_id.as_str())
        .collect();
    let count = |kind: &str| {
        events
            .iter()
            .filter(|e| e.kind == kind && created.contains(&e.order_id))
            .count() as u64
    };
    let orders = OrderCounts {
        created: created.len() as u64,
        delivered: count("delivered"),
        failed: count("failed"),
        cancelled: count("cancelled"),
        open_at_end: still_open.len() as u64,
        open_states,
        lost: created
            .iter()
            .filter(|id| !seen_created.contains(id.as_str()))
            .count() as u64,
        offers: count("offered"),
        rejected: count("rejected"),
        expired: count("expired"),
    };
    let (ops, errors) = {
        let s = stats.lock().expect("not poisoned");
        let mut ops = HashMap::new();
        for (op, h) in &s.hist {
            let q = |x: f64| h.value_at_quantile(x) as f64 / 1000.0;
            let ok = s.ok.get(op).copied().unwrap_or(0);
            ops.insert(
                op.to_string(),
                OpReport {
                    ok,
                    failed: s.failed.get(op).copied().unwrap_or(0),
                    per_s: ok as f64 / elapsed.as_secs_f64(),
                    p50_ms: q(0.5),
                    p95_ms: q(0.95),
                    p99_ms: q(0.99),
                    p999_ms: q(0.999),
                },
            );
        }
        (ops, s.errors.clone())
    };
    let report = SimReport {
        duration_s: elapsed.as_secs_f64(),
        drivers: opts.drivers,
        orders_per_s: opts.orders_per_s,
        ops,
        errors,
        orders,
        invariants,
    };
    if let Some(local) = local {
        local.handle.stop(false).await;
        let mut redis = local.redis;
        let _ = redis.stop().await;
        let _ = std::fs::remove_dir_all(&local.dir);
    }
    Ok(report)
}

/// Send a request, reconnecting and retrying once when the server closed the idle
/// keep-alive connection.
async fn send_retry(
    conn: &mut Conn,
    method: &str,
    path: &str,
    body: &[u8],
) -> anyhow::Result<(u16, Vec<u8>)> {
    match conn.request(method, path, Some(body)).await {
        Ok((status, answer)) => Ok((status, answer.to_vec())),
        Err(_) => {
            conn.reconnect().await?;
            let (status, answer) = conn.request(method, path, Some(body)).await?;
            Ok((status, answer.to_vec()))
        }
    }
}

async fn report_positions(
    conn: &mut Conn,
    walkers: &[Walker],
    batch: bool,
    stats: &Shared<Stats>,
) -> anyhow::Result<()> {
    let t = now_ms();
    if batch {
        for chunk in walkers.chunks(1_000) {
            let mut body = String::with_capacity(chunk.len() * 90);
            body.push_str("{\"positions\":[");
            for (i, w) in chunk.iter().enumerate() {
                if i > 0 {
                    body.push(',');
                }
                body.push_str(&format!(
                    "{{\"driver_id\":\"{}\",\"lat\":{:.6},\"lon\":{:.6},\"recorded_at\":{t}}}",
                    w.id, w.lat, w.lon
                ));
            }
            body.push_str("]}");
            let started = Instant::now();
            let (status, answer) =
                send_retry(conn, "POST", "/v1/locations/batch", body.as_bytes()).await?;
            stats
                .lock()
                .expect("not poisoned")
                .record("positions", started, status, &answer);
        }
    } else {
        for w in walkers {
            let body = format!(
                "{{\"lat\":{:.6},\"lon\":{:.6},\"recorded_at\":{t}}}",
                w.lat, w.lon
            );
            let started = Instant::now();
            let path = format!("/v1/drivers/{}/location", w.id);
            let (status, answer) = send_retry(conn, "PUT", &path, body.as_bytes()).await?;
            stats
                .lock()
                .expect("not poisoned")
                .record("positions", started, status, &answer);
        }
    }
    Ok(())
}

/// A human-readable summary of a report.
pub fn summary(r: &SimReport) -> String {
    let mut out = format!(
        "{:.1} s, {} drivers, {} orders/s offered: {} created, {} delivered, {} failed, {} cancelled, {} open at the end, {} lost; {} offers, {} rejected, {} expired\n",
        r.duration_s,
        r.drivers,
        r.orders_per_s,
        r.orders.created,
        r.orders.delivered,
        r.orders.failed,
        r.orders.cancelled,
        r.orders.open_at_end,
        r.orders.lost,
        r.orders.offers,
        r.orders.rejected,
        r.orders.expired
    );
    let mut ops: Vec<_> = r.ops.iter().collect();
    ops.sort_by(|a, b| a.0.cmp(b.0));
    for (op, o) in ops {
        out.push_str(&format!(
            "  {op:<9} {:>8.1}/s  p50 {:>6.2} ms  p95 {:>6.2}  p99 {:>6.2}  p99.9 {:>6.2}  failed {}\n",
            o.per_s, o.p50_ms, o.p95_ms, o.p99_ms, o.p999_ms, o.failed
        ));
    }
    if !r.orders.open_states.is_empty() {
        out.push_str(&format!(
            "  open at the end by state: {:?}\n",
            r.orders.open_states
        ));
    }
    for (k, v) in &r.errors {
        out.push_str(&format!("  error {k}: {v}\n"));
    }
    out.push_str(&format!(
        "invariants over {} events: double assignments {}, drivers with two orders {}, events after an order ended {}, fence regressions {} -> {}",
        r.invariants.events, r.invariants.double_assignments, r.invariants.driver_double_orders,
        r.invariants.after_terminal, r.invariants.fence_regressions, if r.ok() { "OK" } else { "VIOLATED" }
    ));
    out
}

/// One point of a load sweep.
#[derive(Debug, Clone, Serialize)]
pub struct SweepPoint {
    /// Offered orders per second.
    pub offered: f64,
    /// Orders answered 201 per second.
    pub achieved: f64,
    /// `POST /v1/orders` (create and dispatch) latency, ms.
    pub create_p50_ms: f64,
    /// 99th percentile.
    pub create_p99_ms: f64,
    /// Whether the run kept every invariant and lost no order.
    pub ok: bool,
}

/// Run one simulation per offered rate and collect create-and-dispatch latency.
pub async fn sweep(base: SimOptions, rates: &[f64]) -> anyhow::Result<Vec<SweepPoint>> {
    let mut out = Vec::new();
    for &rate in rates {
        let report = run(SimOptions {
            orders_per_s: rate,
            ..base.clone()
        })
        .await?;
        let create = report.ops.get("create").cloned();
        eprintln!("{}", summary(&report));
        out.push(SweepPoint {
            offered: rate,
            achieved: create.as_ref().map(|c| c.per_s).unwrap_or(0.0),
            create_p50_ms: create.as_ref().map(|c| c.p50_ms).unwrap_or(0.0),
            create_p99_ms: create.as_ref().map(|c| c.p99_ms).unwrap_or(0.0),
            ok: report.ok(),
        });
    }
    Ok(out)
}

/// An SVG line chart of p50 and p99 create latency against offered load.
pub fn sweep_svg(points: &[SweepPoint], title: &str) -> String {
    let (w, h, m) = (720.0, 420.0, 60.0);
    let max_x = points.iter().map(|p| p.offered).fold(1.0, f64::max);
    let max_y = points.iter().map(|p| p.create_p99_ms).fold(1.0, f64::max) * 1.1;
    let x = |v: f64| m + v / max_x * (w - 2.0 * m);
    let y = |v: f64| h - m - v / max_y * (h - 2.0 * m);
    let line = |f: &dyn Fn(&SweepPoint) -> f64| {
        points
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.offered), y(f(p))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"14\">{title}</text>\n<line x1=\"{m}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n<line x1=\"{m}\" y1=\"{m}\" x2=\"{m}\" y2=\"{}\" stroke=\"black\"/>\n<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">offered orders per second</text>\n<text x=\"16\" y=\"{}\" transform=\"rotate(-90 16 {})\" text-anchor=\"middle\">POST /v1/orders latency (ms)</text>\n",
        w / 2.0,
        h - m,
        w - m,
        h - m,
        h - m,
        w / 2.0,
        h - 16.0,
        h / 2.0,
        h / 2.0
    );
    for i in 0..=5 {
        let v = max_y * i as f64 / 5.0;
        svg.push_str(&format!(
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{v:.1}</text><line x1=\"{m}\" y1=\"{:.1}\" x2=\"{}\" y2=\"{:.1}\" stroke=\"#ddd\"/>\n",
            m - 6.0, y(v) + 4.0, y(v), w - m, y(v)
        ));
    }
    for p in points {
        svg.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
            x(p.offered),
            h - m + 16.0,
            p.offered
        ));
    }
    svg.push_str(&format!(
        "<polyline fill=\"none\" stroke=\"#2563eb\" stroke-width=\"2\" points=\"{}\"/>\n<polyline fill=\"none\" stroke=\"#dc2626\" stroke-width=\"2\" points=\"{}\"/>\n<text x=\"{}\" y=\"{}\" fill=\"#2563eb\">p50</text><text x=\"{}\" y=\"{}\" fill=\"#dc2626\">p99</text>\n</svg>\n",
        line(&|p| p.create_p50_ms),
        line(&|p| p.create_p99_ms),
        w - m - 60.0,
        m + 10.0,
        w - m - 60.0,
        m + 26.0
    ));
    svg
}

/// `host:port` of a service URL given as `http://host:port[/]`.
pub(crate) fn address_of(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
}
