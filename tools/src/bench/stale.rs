//! `bench stale`: a fleet that stops reporting all at once (an upstream outage stopping a
//! city's phones for longer than `driver_ttl_ms`) while a few drivers keep reporting and
//! nearest-k searches run in a loop. It measures what the sweeper and search cost Redis while
//! the stale mass is cleared: search latency, Redis SLOWLOG by command, the time until the GEO
//! indexes hold only the fresh drivers, the Redis time scripts took, batch-ingest latency of
//! the fresh drivers, and whether a stale driver was ever returned.
//!
//! The service is a child `geodispatch serve` (`--service-binary`), driven only over HTTP, so
//! an older build runs the same scenario for a before/after comparison.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use geodispatch::domain::DriverStatus;
use geodispatch::store::Keys;
use geodispatch::store::local::{LocalRedis, LocalRedisOptions};
use geodispatch_testkit::faults::Instance;
use geodispatch_testkit::fleet::{HALF_KM, fleet, load_fleet_at, point_in_square, queries};
use geodispatch_testkit::load::Conn;
use geodispatch_testkit::now_ms;
use geodispatch_testkit::rng::SplitMix64;

use super::redis_cpu_usec;

/// Options of `bench stale`.
#[derive(Debug, Clone)]
pub struct StaleOptions {
    /// Drivers that report once, then stop (the stale mass).
    pub drivers: usize,
    /// `driver_ttl_ms` of the service.
    pub ttl_ms: u64,
    /// Drivers that keep reporting every 2 s.
    pub fresh: usize,
    /// `limit` of each nearby search.
    pub search_limit: usize,
    /// Longest wait for clean indexes once the whole mass is stale.
    pub duration: Duration,
    /// The `geodispatch` binary to run.
    pub service_binary: PathBuf,
    /// Run Redis' main thread under `SCHED_FIFO` ([`LocalRedis::set_realtime`]), so that the
    /// slow log counts Redis' own work, not the moments the shared cores were taken from it.
    pub redis_realtime: bool,
}

/// Interval between two batches of the fresh drivers' positions.
const REPORT_EVERY: Duration = Duration::from_secs(2);
/// Prefix of the ids of the drivers that keep reporting.
const FRESH_PREFIX: &str = "fresh-";

/// Latencies of one kind of request (µs).
struct Latencies(hdrhistogram::Histogram<u64>);

impl Latencies {
    fn new() -> Self {
        Self(hdrhistogram::Histogram::new_with_bounds(1, 600_000_000, 3).expect("bounds"))
    }

    fn record(&mut self, d: Duration) {
        let _ = self.0.record(d.as_micros().max(1) as u64);
    }

    fn summary(&self) -> serde_json::Value {
        let ms = |q: f64| self.0.value_at_quantile(q) as f64 / 1000.0;
        json!({"count": self.0.len(), "p50_ms": ms(0.5), "p99_ms": ms(0.99),
               "max_ms": self.0.max() as f64 / 1000.0})
    }
}

/// `INFO commandstats` usec of `evalsha` (every script call, whole script).
async fn evalsha_usec(r: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<f64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(r)
        .await?;
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:"))
        .and_then(|v| v.split(',').find_map(|f| f.strip_prefix("usec=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0))
}

/// The service's `geodispatch_sweeper_redis_seconds_total`, when it has one.
async fn sweeper_seconds(addr: &str) -> Option<f64> {
    let mut c = Conn::open(addr).await.ok()?;
    let (status, body) = c.request("GET", "/metrics", None).await.ok()?;
    if status != 200 {
        return None;
    }
    std::str::from_utf8(body)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("geodispatch_sweeper_redis_seconds_total "))
        .and_then(|v| v.trim().parse().ok())
}

/// Members of the city's GEO sets.
async fn indexed(r: &mut redis::aio::MultiplexedConnection, keys: &Keys) -> anyhow::Result<u64> {
    let mut pipe = redis::pipe();
    for status in ["available", "busy", "offline"] {
        let status = DriverStatus::parse(status).expect("a driver status");
        pipe.cmd("ZCARD").arg(keys.geo("paris", status));
    }
    let cards: Vec<u64> = pipe.query_async(r).await?;
    Ok(cards.iter().sum())
}

/// SLOWLOG entries over 1 ms and over 10 ms by command (a script by its SHA1's first 8
/// characters), and the longest.
async fn slowlog(r: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<serde_json::Value> {
    let entries: Vec<redis::Value> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(-1)
        .query_async(r)
        .await?;
    let mut by: BTreeMap<String, (u64, u64, u64, i64)> = BTreeMap::new();
    for entry in &entries {
        let redis::Value::Array(fields) = entry else {
            continue;
        };
        let Some(redis::Value::Int(us)) = fields.get(2) else {
            continue;
        };
        let words: Vec<String> = match fields.get(3) {
            Some(redis::Value::Array(args)) => args
                .iter()
                .take(2)
                .filter_map(|a| match a {
                    redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        let name = match words.as_slice() {
            [cmd, sha, ..] if cmd.eq_ignore_ascii_case("evalsha") => {
                format!("EVALSHA {}", &sha[..sha.len().min(8)])
            }
            [cmd, ..] => cmd.to_uppercase(),
            [] => "?".to_owned(),
        };
        let e = by.entry(name).or_insert((0, 0, 0, 0));
        if *us > 1_000 {
            e.0 += 1;
        }
        if *us > 2_000 {
            e.1 += 1;
        }
        if *us > 10_000 {
            e.2 += 1;
        }
        e.3 = e.3.max(*us);
    }
    let mut total = (0, 0, 0);
    let rows: serde_json::Map<String, serde_json::Value> = by
        .into_iter()
        .map(|(name, (o1, o2, o10, max))| {
            total.0 += o1;
            total.1 += o2;
            total.2 += o10;
            (
                name,
                json!({"over_1ms": o1, "over_2ms": o2, "over_10ms": o10, "max_us": max}),
            )
        })
        .collect();
    Ok(json!({"over_1ms": total.0, "over_2ms": total.1, "over_10ms": total.2, "by_command": rows}))
}

/// `bench stale`: see the module documentation.
pub async fn stale(opts: StaleOptions) -> anyhow::Result<serde_json::Value> {
    let dir = std::env::temp_dir().join(format!("gd-bench-stale-{}", uuid::Uuid::new_v4()));
    let mut redis = LocalRedis::start(LocalRedisOptions {
        data_dir: dir.join("redis"),
        appendonly: false,
        extra_args: vec![
            "--slowlog-log-slower-than".into(),
            "1000".into(),
            "--slowlog-max-len".into(),
            "1000000".into(),
        ],
    })
    .await?;
    if opts.redis_realtime {
        redis.set_realtime()?;
    }
    let env: Vec<(String, String)> = [
        ("GEODISPATCH_REDIS_URL", redis.url()),
        ("GEODISPATCH_KEY_PREFIX", "bench".to_owned()),
        ("GEODISPATCH_AUTH_ENABLED", "false".to_owned()),
        ("GEODISPATCH_RATE_LIMITS_ENABLED", "false".to_owned()),
        ("GEODISPATCH_DRIVER_TTL_MS", opts.ttl_ms.to_string()),
        ("GEODISPATCH_LOG_FORMAT", "text".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut service = Instance::start(&opts.service_binary, env).await?;
    let addr = service.addr();
    let keys = Keys::new("bench");
    let mut r = redis::Client::open(redis.url())?
        .get_multiplexed_async_connection()
        .await?;

    // The mass: every driver reports once, every position recorded at the same moment (the
    // start of the load), so that the whole mass turns stale together, as when an outage
    // stops every phone at once.
    let drivers = fleet(opts.drivers, 1);
    let first_report = now_ms();
    let started = Instant::now();
    load_fleet_at(&addr, &drivers, 4, false, first_report).await?;
    let load_s = started.elapsed().as_secs_f64();
    eprintln!(
        "loaded {} drivers in {load_s:.1} s ({:.0}/s)",
        drivers.len(),
        drivers.len() as f64 / load_s
    );
    anyhow::ensure!(
        load_s * 1000.0 < opts.ttl_ms as f64,
        "loading took longer than the TTL: raise --ttl-ms"
    );
    // A mass driver returned by a search asked after this moment (plus 2 ms for the two
    // clocks) is a stale answer.
    let all_stale = first_report + opts.ttl_ms as i64;

    let stop = Arc::new(AtomicBool::new(false));
    // The fresh drivers: one batch every 2 s, latency recorded before and after the mass
    // turns stale.
    let reporter = {
        let addr = addr.clone();
        let stop = stop.clone();
        let fresh = opts.fresh;
        tokio::spawn(async move {
            let mut rng = SplitMix64::new(77);
            let spots: Vec<(f64, f64)> = (0..fresh)
                .map(|_| point_in_square(&mut rng, HALF_KM))
                .collect();
            let mut conn = Conn::open(&addr).await?;
            let (mut before, mut during) = (Latencies::new(), Latencies::new());
            let mut tick = tokio::time::interval(REPORT_EVERY);
            let mut errors = 0u64;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let t = now_ms();
                let positions: Vec<_> = spots
                    .iter()
                    .enumerate()
                    .map(|(i, (lat, lon))| json!({"driver_id": format!("{FRESH_PREFIX}{i}"), "lat": lat, "lon": lon, "recorded_at": t, "vehicle_type": "car"}))
                    .collect();
                let body = serde_json::to_vec(&json!({ "positions": positions }))?;
                let sent = Instant::now();
                let (status, _) = conn
                    .request("POST", "/v1/locations/batch", Some(&body))
                    .await?;
                if status != 200 {
                    errors += 1;
                }
                if t < all_stale {
                    before.record(sent.elapsed());
                } else {
                    during.record(sent.elapsed());
                }
            }
            anyhow::Ok((before, during, errors))
        })
    };
    // Nearest-k searches in a loop, each answer checked: a mass driver returned after its
    // chunk was surely stale is a stale answer.
    let searcher = {
        let addr = addr.clone();
        let stop = stop.clone();
        let limit = opts.search_limit;
        tokio::spawn(async move {
            let qs = queries(10_000, 2);
            let mut conn = Conn::open(&addr).await?;
            let (mut before, mut during) = (Latencies::new(), Latencies::new());
            let (mut stale_returned, mut partial, mut errors, mut empty) = (0u64, 0u64, 0u64, 0u64);
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let (lat, lon) = qs[i % qs.len()];
                i += 1;
                let path = format!("/v1/drivers/nearby?lat={lat}&lon={lon}&limit={limit}");
                let asked = now_ms();
                let sent = Instant::now();
                let (status, body) = conn.request("GET", &path, None).await?;
                let took = sent.elapsed();
                if status != 200 {
                    errors += 1;
                    continue;
                }
                let answer: serde_json::Value = serde_json::from_slice(body)?;
                if asked < all_stale {
                    before.record(took);
                    continue;
                }
                during.record(took);
                if answer["partial"] == true {
                    partial += 1;
                }
                let found = answer["drivers"].as_array().cloned().unwrap_or_default();
                if found.is_empty() {
                    empty += 1;
                }
                for d in found {
                    let id = d["driver_id"].as_str().unwrap_or("");
                    if !id.starts_with(FRESH_PREFIX) && asked > all_stale + 2 {
                        stale_returned += 1;
                    }
                }
            }
            anyhow::Ok((before, during, stale_returned, partial, errors, empty))
        })
    };

    // From the moment the mass is stale on: Redis' slow log, script time and CPU.
    let wait = (all_stale - now_ms()).max(0) as u64;
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let _: () = redis::cmd("SLOWLOG")
        .arg("RESET")
        .query_async(&mut r)
        .await?;
    let window = Instant::now();
    let (eval0, cpu0, sweep0) = (
        evalsha_usec(&mut r).await?,
        redis_cpu_usec(&mut r).await?,
        sweeper_seconds(&addr).await,
    );
    eprintln!("the mass is stale; waiting for clean indexes");
    let deadline = Instant::now()
        + Duration::from_millis((all_stale - now_ms()).max(0) as u64)
        + opts.duration;
    let mut clean_after_s = None;
    let mut last_print = Instant::now();
    loop {
        let n = indexed(&mut r, &keys).await?;
        if now_ms() > all_stale && n <= opts.fresh as u64 {
            clean_after_s = Some((now_ms() - all_stale) as f64 / 1000.0);
            break;
        }
        if Instant::now() > deadline {
            break;
        }
        if last_print.elapsed() > Duration::from_secs(5) {
            eprintln!("{n} members indexed");
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let window_s = window.elapsed().as_secs_f64();
    let (eval1, cpu1, sweep1) = (
        evalsha_usec(&mut r).await?,
        redis_cpu_usec(&mut r).await?,
        sweeper_seconds(&addr).await,
    );
    let slow = slowlog(&mut r).await?;
    stop.store(true, Ordering::Relaxed);
    let (ingest_before, ingest_during, ingest_errors) = reporter.await??;
    let (search_before, search_during, stale_returned, partial, search_errors, empty) =
        searcher.await??;
    service.kill().await;
    let _ = redis.stop().await;
    let _ = std::fs::remove_dir_all(&dir);

    let sweeper_share = match (sweep0, sweep1) {
        (Some(a), Some(b)) => json!((b - a) / window_s),
        _ => json!(null),
    };
    let result = json!({
        "drivers": opts.drivers, "fresh": opts.fresh, "ttl_ms": opts.ttl_ms,
        "search_limit": opts.search_limit,
        "service_binary": opts.service_binary.display().to_string(),
        "redis_realtime": opts.redis_realtime,
        "load_s": load_s,
        "window_s": window_s,
        "clean_after_stale_s": clean_after_s,
        "search_before_stale": search_before.summary(),
        "search_during_sweep": search_during.summary(),
        "search_partial_answers": partial,
        "search_empty_answers": empty,
        "search_errors": search_errors,
        "stale_drivers_returned": stale_returned,
        "slowlog": slow,
        "scripts_share_of_redis": (eval1 - eval0) / 1e6 / window_s,
        "sweeper_share_of_redis": sweeper_share,
        "redis_cpu_share": (cpu1 - cpu0) / 1e6 / window_s,
        "fresh_ingest_before_stale": ingest_before.summary(),
        "fresh_ingest_during_sweep": ingest_during.summary(),
        "fresh_ingest_errors": ingest_errors,
    });
    eprintln!("{result:#}");
    Ok(result)
}
