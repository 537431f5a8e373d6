//! `geodispatch-tools bench …`: the commands behind every figure in `docs/BENCHMARKS.md`.
//!
//! Each scenario starts its own `redis-server` (in memory, free port) and the service
//! in-process, loads data through the public API, then drives it over HTTP with a closed-loop
//! load generator ([`geodispatch_testkit::load`]) and prints its figures next to the anchors measured in the same
//! run: our own no-Redis endpoint (`/healthz`) for HTTP overhead, `redis-benchmark` for raw
//! GEOADD, a naive GEOSEARCH straight on Redis, and PostGIS KNN (`tools/scripts/postgis_knn.sh`).

mod dispatch;
mod matching;
mod stale;

pub use dispatch::{DispatchOptions, dispatch};
pub use matching::{MatchOptions, matching};
pub use stale::{StaleOptions, stale};

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use geodispatch::app::Application;
use geodispatch::config::Settings;
use geodispatch::store::local::{LocalRedis, LocalRedisOptions};
use geodispatch_testkit::fleet::{
    HALF_KM, fleet, load_fleet, load_fleet_with, point_in_square, queries,
};
use geodispatch_testkit::load;
use geodispatch_testkit::now_ms;
use geodispatch_testkit::rng::SplitMix64;

/// A Redis and a service instance owned by one benchmark step.
struct Bed {
    redis: LocalRedis,
    app_addr: String,
    context: geodispatch::app::AppContext,
    handle: actix_web::dev::ServerHandle,
    dir: PathBuf,
}

impl Bed {
    async fn start(http_workers: usize) -> anyhow::Result<Self> {
        Self::start_with(http_workers, |_| {}).await
    }

    async fn start_with(
        http_workers: usize,
        adjust: impl FnOnce(&mut Settings),
    ) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("gd-bench-{}", uuid::Uuid::new_v4()));
        let redis = LocalRedis::start(LocalRedisOptions {
            data_dir: dir.join("redis"),
            appendonly: false,
            extra_args: vec![],
        })
        .await?;
        let settings = Settings {
            listen: "127.0.0.1:0".into(),
            key_prefix: "bench".into(),
            http_workers,
            driver_ttl_ms: 3_600_000,
            sweep_interval_ms: 3_600_000,
            batch_max_positions: 1_000,
            // The benchmarks measure the service's core; protection is measured on its own.
            auth_enabled: false,
            rate_limits_enabled: false,
            ..Settings::default()
        };
        let mut settings = settings;
        adjust(&mut settings);
        let app = Application::build(settings, &redis.url(), false)?;
        let app_addr = format!("127.0.0.1:{}", app.port());
        let context = app.context().clone();
        let handle = app.handle();
        tokio::spawn(app.run_until_stopped());
        Ok(Self {
            redis,
            app_addr,
            context,
            handle,
            dir,
        })
    }

    async fn redis(&self) -> anyhow::Result<redis::aio::MultiplexedConnection> {
        Ok(redis::Client::open(self.redis.url())?
            .get_multiplexed_async_connection()
            .await?)
    }

    async fn stop(mut self) {
        self.handle.stop(true).await;
        let _ = self.redis.stop().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Run a naive `GEOSEARCH key FROMLONLAT … BYRADIUS r m ASC COUNT 20 WITHDIST` straight on
/// Redis from `connections` concurrent callers; returns (queries/s, p99 ms).
async fn naive_geosearch(
    url: &str,
    key: &str,
    radius_m: f64,
    qs: &[(f64, f64)],
    connections: usize,
    duration: Duration,
) -> anyhow::Result<(f64, f64)> {
    let client = redis::Client::open(url)?;
    // Open every connection before any query runs: a connection handshake queued behind wide
    // searches would time out.
    let config = redis::AsyncConnectionConfig::new()
        .set_response_timeout(None)
        .set_connection_timeout(None);
    let mut conns = Vec::new();
    for _ in 0..connections {
        conns.push(
            client
                .get_multiplexed_async_connection_with_config(&config)
                .await?,
        );
    }
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (c, mut conn) in conns.into_iter().enumerate() {
        let qs: Vec<(f64, f64)> = qs.iter().skip(c).step_by(connections).copied().collect();
        let key = key.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut i = 0;
            while Instant::now() < deadline {
                let (lat, lon) = qs[i % qs.len()];
                i += 1;
                let t = Instant::now();
                let _: redis::Value = redis::cmd("GEOSEARCH")
                    .arg(&key)
                    .arg("FROMLONLAT")
                    .arg(lon)
                    .arg(lat)
                    .arg("BYRADIUS")
                    .arg(radius_m)
                    .arg("m")
                    .arg("ASC")
                    .arg("COUNT")
                    .arg(20)
                    .arg("WITHDIST")
                    .query_async(&mut conn)
                    .await?;
                hist.record(t.elapsed().as_micros().max(1) as u64)?;
            }
            anyhow::Ok(hist)
        }));
    }
    let mut all = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for task in tasks {
        all.add(task.await??)?;
    }
    let qps = all.len() as f64 / started.elapsed().as_secs_f64();
    Ok((qps, all.value_at_quantile(0.99) as f64 / 1000.0))
}

fn postgis(
    script: &Path,
    dir: &Path,
    drivers: &[(String, f64, f64, &'static str)],
    qs: &[(f64, f64)],
    duration: Duration,
    connections: usize,
) -> serde_json::Value {
    use std::io::Write;
    let write = || -> anyhow::Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(dir)?;
        let points = dir.join("points.csv");
        let mut f = std::io::BufWriter::new(std::fs::File::create(&points)?);
        for (id, lat, lon, _) in drivers {
            writeln!(f, "{id},{lon},{lat}")?;
        }
        f.flush()?;
        let qpath = dir.join("queries.csv");
        let mut f = std::io::BufWriter::new(std::fs::File::create(&qpath)?);
        for (lat, lon) in qs {
            writeln!(f, "{lon},{lat}")?;
        }
        f.flush()?;
        Ok((points, qpath))
    };
    let (points, qpath) = match write() {
        Ok(p) => p,
        Err(e) => return json!({"engine": "postgis", "skipped": format!("writing CSVs: {e}")}),
    };
    let output = std::process::Command::new("bash")
        .arg(script)
        .arg(&points)
        .arg(&qpath)
        .arg(duration.as_secs().to_string())
        .arg(connections.to_string())
        .stderr(std::process::Stdio::inherit())
        .output();
    match output {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .and_then(|l| serde_json::from_str(l).ok())
            .unwrap_or_else(
                || json!({"engine": "postgis", "skipped": "no JSON line from the script"}),
            ),
        Err(e) => {
            json!({"engine": "postgis", "skipped": format!("running {}: {e}", script.display())})
        }
    }
}

/// Redis' `used_memory` in bytes.
async fn used_memory(r: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<i64> {
    let info: String = redis::cmd("INFO").arg("memory").query_async(r).await?;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .context("INFO memory without used_memory")
}

/// `MEMORY USAGE … SAMPLES 0` (exact) of every key, per driver of a fleet of `n`, grouped by
/// key pattern (the city tag and bucket numbers folded).
async fn memory_by_key(
    r: &mut redis::aio::MultiplexedConnection,
    n: usize,
) -> anyhow::Result<std::collections::BTreeMap<String, f64>> {
    let mut keys: Vec<String> = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query_async(r)
            .await?;
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let mut out = std::collections::BTreeMap::new();
    for key in keys {
        let bytes: Option<i64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(&key)
            .arg("SAMPLES")
            .arg(0)
            .query_async(r)
            .await?;
        let mut pattern = match (key.find('{'), key.find('}')) {
            (Some(a), Some(b)) if a < b && &key[a..=b] != "{drivers}" => {
                format!("{}{{city}}{}", &key[..a], &key[b + 1..])
            }
            _ => key.clone(),
        };
        // Bucketed keys (`…:seen:123`) count as one pattern.
        if let Some((head, last)) = pattern.rsplit_once(':')
            && !last.is_empty()
            && last.bytes().all(|b| b.is_ascii_digit())
        {
            pattern = format!("{head}:<bucket>");
        }
        *out.entry(pattern).or_insert(0.0) += bytes.unwrap_or(0) as f64 / n as f64;
    }
    Ok(out)
}

/// CPU time (µs) Redis' main thread has used since it started (`INFO cpu`); the difference of
/// two readings is the Redis time a phase cost, command execution and network I/O included.
/// (Summing `INFO commandstats` would count a script's inner commands twice: once on their
/// own line and once inside `evalsha`/`exec`.)
async fn redis_cpu_usec(r: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<f64> {
    let info: String = redis::cmd("INFO").arg("cpu").query_async(r).await?;
    let field = |name: &str| -> anyhow::Result<f64> {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .with_context(|| format!("INFO cpu without {name}"))
    };
    Ok((field("used_cpu_user_main_thread:")? + field("used_cpu_sys_main_thread:")?) * 1e6)
}

/// Options of `bench nearby`.
#[derive(Debug, Clone)]
pub struct NearbyOptions {
    /// Fleet sizes to measure.
    pub sizes: Vec<usize>,
    /// Seconds per measured phase.
    pub duration: Duration,
    /// Concurrent connections.
    pub connections: usize,
    /// HTTP worker threads of the service.
    pub http_workers: usize,
    /// Path of `postgis_knn.sh`, or `None` to skip PostGIS.
    pub postgis_script: Option<PathBuf>,
    /// Run Redis' main thread under `SCHED_FIFO` ([`LocalRedis::set_realtime`]).
    pub redis_realtime: bool,
    /// Fleet positions carry accuracy, heading and speed ([`load_fleet_with`]).
    pub motion: bool,
}

/// `bench nearby`: nearest-20 through the service vs naive GEOSEARCH and PostGIS KNN.
pub async fn nearby(opts: NearbyOptions) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut rows = Vec::new();
    let qs = queries(10_000, 2);
    for &n in &opts.sizes {
        eprintln!("== nearby: {n} drivers");
        let bed = Bed::start(opts.http_workers).await?;
        if opts.redis_realtime {
            bed.redis.set_realtime()?;
        }
        let drivers = fleet(n, 1);
        let mut r = bed.redis().await?;
        let before = used_memory(&mut r).await?;
        let ingest = load_fleet_with(&bed.app_addr, &drivers, 4, opts.motion).await?;
        eprintln!("loaded {n} drivers over HTTP batches at {ingest:.0} positions/s");
        let mut r = bed.redis().await?;
        // Every driver has a score of 3.5–5.0 (a rating), written straight into the city's
        // score set (the API would take one request per driver).
        let scores = (geodispatch::store::Keys::new("bench")).scores("paris");
        let mut rng = SplitMix64::new(3);
        for chunk in drivers.chunks(10_000) {
            let mut zadd = redis::cmd("ZADD");
            zadd.arg(&scores);
            for (id, ..) in chunk {
                let rating = 3.5 + (rng.next_u64() % 1501) as f64 / 1000.0;
                zadd.arg(rating).arg(id);
            }
            let _: () = zadd.query_async(&mut r).await?;
        }
        // Memory before the naive anchor's own GEO set is built (it is not ours).
        let bytes_per_driver = (used_memory(&mut r).await? - before) as f64 / n as f64;
        let by_key = memory_by_key(&mut r, n).await?;
        eprintln!(
            "Redis memory per driver (every key a driver costs): {bytes_per_driver:.0} B; by key: {by_key:?}"
        );
        for chunk in drivers.chunks(10_000) {
            let mut pipe = redis::pipe();
            for (id, lat, lon, _) in chunk {
                pipe.cmd("GEOADD")
                    .arg("naive:all")
                    .arg(*lon)
                    .arg(*lat)
                    .arg(id)
                    .ignore();
            }
            let _: () = pipe.query_async(&mut r).await?;
        }
        for chunk in drivers.chunks(10_000) {
            let mut pipe = redis::pipe();
            for (id, lat, lon, _) in chunk {
                pipe.cmd("GEOADD")
                    .arg("naive:all")
                    .arg(*lon)
                    .arg(*lat)
                    .arg(id)
                    .ignore();
            }
            let _: () = pipe.query_async(&mut r).await?;
        }
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("slowlog-log-slower-than")
            .arg(1000)
            .query_async(&mut r)
            .await?;
        let path_for = {
            let qs = qs.clone();
            move |c: usize, seq: u64| {
                let (lat, lon) = qs[(c * 7919 + seq as usize * 31) % qs.len()];
                (
                    "GET",
                    format!("/v1/drivers/nearby?lat={lat}&lon={lon}&limit=20&status=available"),
                    None,
                )
            }
        };
        load::run(
            &bed.app_addr,
            opts.connections,
            Duration::from_secs(1),
            path_for.clone(),
        )
        .await?;
        let _: () = redis::cmd("SLOWLOG")
            .arg("RESET")
            .query_async(&mut r)
            .await?;
        let cpu0 = redis_cpu_usec(&mut r).await?;
        let ours = load::run(
            &bed.app_addr,
            opts.connections,
            opts.duration,
            path_for.clone(),
        )
        .await?;
        let redis_us = (redis_cpu_usec(&mut r).await? - cpu0) / ours.latency_us.len().max(1) as f64;
        eprintln!("redis time per search: {redis_us:.1} us");
        let slow: Vec<redis::Value> = redis::cmd("SLOWLOG")
            .arg("GET")
            .arg(128)
            .query_async(&mut r)
            .await?;
        let mut slow_max_us = 0i64;
        for entry in &slow {
            if let redis::Value::Array(fields) = entry
                && let Some(redis::Value::Int(us)) = fields.get(2)
            {
                slow_max_us = slow_max_us.max(*us);
                if let Some(redis::Value::Array(args)) = fields.get(3) {
                    let words: Vec<String> = args
                        .iter()
                        .filter_map(|a| match a {
                            redis::Value::BulkString(b) => {
                                Some(String::from_utf8_lossy(b).into_owned())
                            }
                            _ => None,
                        })
                        .collect();
                    eprintln!("slowlog: {us} us: {}", words.join(" "));
                }
            }
        }
        eprintln!(
            "ours: {:.0} q/s, p50 {:.2} ms, p99 {:.2} ms, errors {}, slowlog(>1ms) {} entries",
            ours.rps(),
            ours.ms(0.5),
            ours.ms(0.99),
            ours.errors,
            slow.len()
        );
        // Candidate ranking (nearest available → composite with driver scores), same points.
        let ranking_path = {
            let qs = qs.clone();
            move |c: usize, seq: u64| {
                let (lat, lon) = qs[(c * 7919 + seq as usize * 31) % qs.len()];
                (
                    "GET",
                    format!("/v1/candidates?lat={lat}&lon={lon}&limit=20"),
                    None,
                )
            }
        };
        let cpu0 = redis_cpu_usec(&mut r).await?;
        let ranked =
            load::run(&bed.app_addr, opts.connections, opts.duration, ranking_path).await?;
        let ranked_redis_us =
            (redis_cpu_usec(&mut r).await? - cpu0) / ranked.latency_us.len().max(1) as f64;
        eprintln!("redis time per candidates call: {ranked_redis_us:.1} us");
        eprintln!(
            "candidates: {:.0} q/s, p50 {:.2} ms, p99 {:.2} ms, errors {} (cost {:.2}x nearest-20)",
            ranked.rps(),
            ranked.ms(0.5),
            ranked.ms(0.99),
            ranked.errors,
            ours.rps() / ranked.rps().max(1e-9)
        );
        // Latency at a moderate load: 2 connections (the throughput run saturates and queues).
        let light = load::run(&bed.app_addr, 2, opts.duration, path_for).await?;
        eprintln!(
            "ours at 2 connections: {:.0} q/s, p50 {:.2} ms, p99 {:.2} ms",
            light.rps(),
            light.ms(0.5),
            light.ms(0.99)
        );
        let mut naive = Vec::new();
        for radius in [1_000.0, 5_000.0] {
            let (qps, p99) = naive_geosearch(
                &bed.redis.url(),
                "naive:all",
                radius,
                &qs,
                opts.connections,
                opts.duration,
            )
            .await?;
            eprintln!("naive GEOSEARCH {radius} m: {qps:.0} q/s, p99 {p99:.2} ms");
            naive.push(json!({"radius_m": radius, "qps": qps, "p99_ms": p99}));
        }
        let pg = match &opts.postgis_script {
            Some(script) => postgis(
                script,
                &bed.dir.join("pg"),
                &drivers,
                &qs,
                opts.duration,
                opts.connections.min(4),
            ),
            None => json!({"engine": "postgis", "skipped": "not requested"}),
        };
        eprintln!("postgis: {pg}");
        rows.push(json!({
            "drivers": n,
            "ours": {"qps": ours.rps(), "p50_ms": ours.ms(0.5), "p99_ms": ours.ms(0.99), "p999_ms": ours.ms(0.999), "errors": ours.errors,
                      "slowlog_over_1ms": slow.len(), "slowlog_max_us": slow_max_us, "redis_us_per_search": redis_us},
            "candidates": {"qps": ranked.rps(), "p50_ms": ranked.ms(0.5), "p99_ms": ranked.ms(0.99), "errors": ranked.errors,
                           "cost_vs_nearest20": ours.rps() / ranked.rps().max(1e-9), "redis_us_per_call": ranked_redis_us},
            "ours_2_connections": {"qps": light.rps(), "p50_ms": light.ms(0.5), "p99_ms": light.ms(0.99), "p999_ms": light.ms(0.999)},
            "naive_geosearch": naive,
            "postgis": pg,
            "batch_ingest_positions_per_s": ingest,
            "redis_bytes_per_driver": bytes_per_driver,
            "redis_bytes_per_driver_by_key": by_key,
        }));
        bed.stop().await;
    }
    Ok(rows)
}

/// Options of `bench ingest`.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Seconds per measured phase.
    pub duration: Duration,
    /// Concurrent connections for single requests.
    pub connections: usize,
    /// Concurrent connections for batches.
    pub batch_connections: usize,
    /// HTTP worker threads of the service.
    pub http_workers: usize,
}

/// Drivers each single-PUT connection updates in turn.
const PUT_DRIVERS_PER_CONN: usize = 5_000;
/// Drivers each batch connection updates in turn (20 batches of 1,000).
const BATCH_DRIVERS_PER_CONN: usize = 20_000;

/// `bench ingest`: single PUT vs our no-Redis `/healthz`; batch vs `redis-benchmark -P 16` GEOADD.
pub async fn ingest(opts: IngestOptions) -> anyhow::Result<serde_json::Value> {
    let bed = Bed::start(opts.http_workers).await?;
    let d = opts.duration;
    load::run(
        &bed.app_addr,
        opts.connections,
        Duration::from_secs(1),
        |_, _| ("GET", "/healthz".to_owned(), None),
    )
    .await?;
    let hello = load::run(&bed.app_addr, opts.connections, d, |_, _| {
        ("GET", "/healthz".to_owned(), None)
    })
    .await?;
    eprintln!(
        "hello (/healthz): {:.0} req/s, p99 {:.2} ms",
        hello.rps(),
        hello.ms(0.99)
    );

    // Every driver the phases below update exists beforehand (created through the batch
    // endpoint), so they measure the steady state of a fleet reporting: updates of known
    // drivers. A driver's first position costs more (its directory entry is claimed and
    // checked); that rate is the fleet load's, printed here.
    let mut rng = SplitMix64::new(11);
    let mut drivers = Vec::new();
    for c in 0..opts.connections {
        for i in 0..PUT_DRIVERS_PER_CONN {
            let (lat, lon) = point_in_square(&mut rng, HALF_KM);
            drivers.push((format!("p{c}-{i}"), lat, lon, "car"));
        }
    }
    for c in 0..opts.batch_connections {
        for i in 0..BATCH_DRIVERS_PER_CONN {
            let (lat, lon) = point_in_square(&mut rng, HALF_KM);
            drivers.push((format!("b{c}-{i}"), lat, lon, "car"));
        }
    }
    let created_pps = load_fleet(&bed.app_addr, &drivers, 4).await?;
    eprintln!(
        "created {} drivers through the batch endpoint: {created_pps:.0} new drivers/s",
        drivers.len()
    );

    // Each connection owns its drivers and sends strictly increasing timestamps, so every
    // update is accepted (a 409 would count as an error).
    let clocks: std::sync::Arc<Vec<std::sync::atomic::AtomicI64>> = std::sync::Arc::new(
        (0..opts.connections.max(opts.batch_connections))
            .map(|_| std::sync::atomic::AtomicI64::new(0))
            .collect(),
    );
    let tick = {
        let clocks = clocks.clone();
        move |c: usize| {
            let last = clocks[c].load(std::sync::atomic::Ordering::Relaxed);
            let t = now_ms().max(last + 1);
            clocks[c].store(t, std::sync::atomic::Ordering::Relaxed);
            t
        }
    };
    let points = queries(50_000, 5);
    let put = {
        let tick = tick.clone();
        let points = points.clone();
        move |c: usize, seq: u64| {
            let (lat, lon) = points[(seq as usize * 13 + c) % points.len()];
            let body = format!(
                "{{\"lat\":{lat},\"lon\":{lon},\"recorded_at\":{}}}",
                tick(c)
            );
            (
                "PUT",
                format!(
                    "/v1/drivers/p{c}-{}/location",
                    seq % PUT_DRIVERS_PER_CONN as u64
                ),
                Some(body.into_bytes()),
            )
        }
    };
    load::run(
        &bed.app_addr,
        opts.connections,
        Duration::from_secs(1),
        put.clone(),
    )
    .await?;
    let mut r = bed.redis().await?;
    let cpu0 = redis_cpu_usec(&mut r).await?;
    let single = load::run(&bed.app_addr, opts.connections, d, put).await?;
    let single_redis_us = (redis_cpu_usec(&mut r).await? - cpu0) / single.ok.max(1) as f64;
    eprintln!(
        "single PUT: {:.0} req/s, p99 {:.2} ms, errors {}, redis time {single_redis_us:.1} us per PUT",
        single.rps(),
        single.ms(0.99),
        single.errors
    );

    let batch = {
        let tick = tick.clone();
        move |c: usize, seq: u64| {
            let t = tick(c);
            let mut body = String::with_capacity(80_000);
            body.push_str("{\"positions\":[");
            for i in 0..1_000usize {
                let (lat, lon) = points[(seq as usize * 1_000 + i) % points.len()];
                if i > 0 {
                    body.push(',');
                }
                body.push_str(&format!(
                    "{{\"driver_id\":\"b{c}-{}\",\"lat\":{lat},\"lon\":{lon},\"recorded_at\":{t}}}",
                    (seq as usize * 1_000 + i) % BATCH_DRIVERS_PER_CONN
                ));
            }
            body.push_str("]}");
            (
                "POST",
                "/v1/locations/batch".to_owned(),
                Some(body.into_bytes()),
            )
        }
    };
    let cpu0 = redis_cpu_usec(&mut r).await?;
    let batches = load::run(&bed.app_addr, opts.batch_connections, d, batch).await?;
    let batch_redis_us =
        (redis_cpu_usec(&mut r).await? - cpu0) / (batches.ok.max(1) as f64 * 1_000.0);
    eprintln!("redis time per batched position: {batch_redis_us:.1} us");
    let batch_pps = batches.rps() * 1_000.0;
    eprintln!(
        "batch: {batch_pps:.0} positions/s ({:.0} batches/s, p99 {:.2} ms)",
        batches.rps(),
        batches.ms(0.99)
    );

    // Drivers with an open order: each batch connection dispatches 1,000 orders (picked up at
    // points of the square, offered to the nearest driver) and accepts them, then sends the
    // same batches as above for those drivers only, so the phases differ only in that every
    // driver is busy with an accepted order (whose pickup a build with arrival detection checks
    // each position against).
    let mut holders = Vec::new();
    for c in 0..opts.batch_connections {
        let addr = bed.app_addr.clone();
        holders.push(tokio::spawn(async move {
            let mut conn = load::Conn::open(&addr).await?;
            let mut rng = SplitMix64::new(100 + c as u64);
            let mut busy = Vec::with_capacity(1_000);
            for i in 0..1_000 {
                let (lat, lon) = point_in_square(&mut rng, HALF_KM);
                let body = format!(
                    "{{\"order_id\":\"busy-{c}-{i}\",\"pickup\":{{\"lat\":{lat},\"lon\":{lon}}}}}"
                );
                let (status, answer) = conn
                    .request("POST", "/v1/orders", Some(body.as_bytes()))
                    .await?;
                let offer: serde_json::Value = serde_json::from_slice(answer)?;
                let (Some(driver), Some(fence)) =
                    (offer["driver_id"].as_str(), offer["fencing_token"].as_u64())
                else {
                    anyhow::bail!("order not offered ({status}): {offer}");
                };
                let driver = driver.to_owned();
                let body = format!("{{\"driver_id\":\"{driver}\",\"fencing_token\":{fence}}}");
                let (status, _) = conn
                    .request(
                        "POST",
                        &format!("/v1/orders/busy-{c}-{i}/accept"),
                        Some(body.as_bytes()),
                    )
                    .await?;
                anyhow::ensure!(status == 200, "accept answered {status}");
                busy.push(driver);
            }
            Ok::<_, anyhow::Error>(busy)
        }));
    }
    let mut busy: Vec<Vec<String>> = Vec::new();
    for h in holders {
        busy.push(h.await??);
    }
    let busy = std::sync::Arc::new(busy);
    let busy_batch = {
        let tick = tick.clone();
        let points = queries(50_000, 5);
        move |c: usize, seq: u64| {
            let t = tick(c);
            let mut body = String::with_capacity(80_000);
            body.push_str("{\"positions\":[");
            for (i, id) in busy[c].iter().enumerate() {
                let (lat, lon) = points[(seq as usize * 1_000 + i) % points.len()];
                if i > 0 {
                    body.push(',');
                }
                body.push_str(&format!(
                    "{{\"driver_id\":\"{id}\",\"lat\":{lat},\"lon\":{lon},\"recorded_at\":{t}}}"
                ));
            }
            body.push_str("]}");
            (
                "POST",
                "/v1/locations/batch".to_owned(),
                Some(body.into_bytes()),
            )
        }
    };
    let cpu0 = redis_cpu_usec(&mut r).await?;
    let busy_batches = load::run(&bed.app_addr, opts.batch_connections, d, busy_batch).await?;
    let busy_redis_us =
        (redis_cpu_usec(&mut r).await? - cpu0) / (busy_batches.ok.max(1) as f64 * 1_000.0);
    let busy_pps = busy_batches.rps() * 1_000.0;
    eprintln!(
        "batch, drivers with an open order: {busy_pps:.0} positions/s (p99 {:.2} ms, errors {}), redis time {busy_redis_us:.1} us per position",
        busy_batches.ms(0.99),
        busy_batches.errors
    );

    let rb = std::process::Command::new("redis-benchmark")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &bed.redis.port().to_string(),
            "-c",
            "16",
            "-n",
            "2000000",
            "-P",
            "16",
            "-r",
            "1000000",
            "-q",
        ])
        .args(["GEOADD", "rb:geo", "2.35", "48.85", "m:__rand_int__"])
        .output()
        .context("running redis-benchmark (Debian package redis-tools)")?;
    let text = String::from_utf8_lossy(&rb.stdout).to_string();
    let rb_rps: f64 = text
        .split(" requests per second")
        .next()
        .and_then(|head| head.rsplit(": ").next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0.0);
    eprintln!("redis-benchmark -P 16 GEOADD: {rb_rps:.0} req/s");
    bed.stop().await;
    Ok(json!({
        "hello_rps": hello.rps(), "hello_p99_ms": hello.ms(0.99),
        "drivers_created": drivers.len(), "created_per_s": created_pps,
        "single_put_rps": single.rps(), "single_put_p50_ms": single.ms(0.5), "single_put_p99_ms": single.ms(0.99), "single_put_errors": single.errors,
        "single_put_redis_us": single_redis_us, "batch_redis_us_per_position": batch_redis_us,
        "single_put_vs_hello": single.rps() / hello.rps(),
        "batch_positions_per_s": batch_pps, "batch_p99_ms": batches.ms(0.99), "batch_errors": batches.errors,
        "busy_batch_positions_per_s": busy_pps, "busy_batch_p99_ms": busy_batches.ms(0.99), "busy_batch_errors": busy_batches.errors,
        "busy_batch_redis_us_per_position": busy_redis_us,
        "redis_benchmark_geoadd_rps": rb_rps,
        "batch_vs_redis_benchmark": if rb_rps > 0.0 { batch_pps / rb_rps } else { 0.0 },
    }))
}
