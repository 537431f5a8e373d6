//! `geodispatch-tools`: the benchmarks behind `docs/BENCHMARKS.md` and `docs/RELIABILITY.md`,
//! the city simulator and the seed generator. They drive the service like any client (over
//! HTTP, or through its library for the in-process measurements); none of this is linked into
//! the service binary.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use geodispatch_tools::{bench, replay, seed, sim};

/// Benchmarks, simulator and seed generator of geodispatch.
#[derive(Debug, Parser)]
#[command(name = "geodispatch-tools", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Benchmarks behind docs/BENCHMARKS.md (each starts its own redis-server and service).
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// Simulate a city over HTTP: moving drivers, Poisson orders, drivers answering offers;
    /// prints throughput, latency percentiles, errors and the invariant check of the events.
    Sim(Box<SimArgs>),
    /// Replay real days through the service and measure its dispatch decisions
    /// (docs/DISPATCH-QUALITY.md).
    Replay {
        #[command(subcommand)]
        command: ReplayCommand,
    },
    /// Seed data tools.
    Seed {
        #[command(subcommand)]
        command: SeedCommand,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Nearest-20 through the service vs naive GEOSEARCH and PostGIS KNN, per fleet size.
    Nearby {
        /// Fleet sizes (drivers in the 30×30 km Paris square).
        #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
        sizes: Vec<usize>,
        /// Seconds per measured phase.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Concurrent connections.
        #[arg(long, default_value_t = 16)]
        connections: usize,
        /// HTTP worker threads of the service.
        #[arg(long, default_value_t = 2)]
        http_workers: usize,
        /// PostGIS KNN script; `none` skips PostGIS.
        #[arg(long, default_value = "tools/scripts/postgis_knn.sh")]
        postgis_script: String,
        /// Run the benchmark's redis-server under the real-time policy SCHED_FIFO (needs
        /// root), so that the load generator and the service, which share its cores here,
        /// never preempt it in the middle of a command (what SLOWLOG would count).
        #[arg(long)]
        redis_realtime: bool,
        /// Send every fleet position with accuracy_m, heading_deg and speed_mps, as phones
        /// usually do (the stored state, and so the memory per driver, grows with them).
        #[arg(long)]
        motion: bool,
    },
    /// Dispatch decisions per second and latency, drivers completing each order at once
    /// (in-process engine and end to end over HTTP), with the invariant check of the history.
    Dispatch {
        /// Drivers in the 30×30 km Paris square.
        #[arg(long, default_value_t = 10_000)]
        drivers: usize,
        /// Seconds per measured phase.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Concurrent dispatch loops / HTTP connections.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// HTTP worker threads of the service.
        #[arg(long, default_value_t = 2)]
        http_workers: usize,
    },
    /// One batched matching round in one city: service CPU, Redis CPU, wall and solve time,
    /// with `orders` pending orders and `drivers` available drivers (docs/BENCHMARKS.md).
    Match {
        /// Pending orders per round.
        #[arg(long, default_value_t = 1_000)]
        orders: usize,
        /// Available drivers in the 30×30 km Paris square.
        #[arg(long, default_value_t = 5_000)]
        drivers: usize,
        /// Measured rounds (after one warm-up round).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// A fleet that stops reporting all at once (every driver stale together) while a few
    /// keep reporting and nearest-k searches loop: search latency, Redis SLOWLOG by command,
    /// time until the indexes are clean, the sweeper's share of Redis, fresh batch-ingest
    /// latency, and stale drivers returned (docs/BENCHMARKS.md). Drives a child `serve`
    /// over HTTP, so an older build can be measured the same way.
    Stale {
        /// Drivers that report once, then stop (in the 30×30 km Paris square).
        #[arg(long, default_value_t = 200_000)]
        drivers: usize,
        /// `driver_ttl_ms` of the service.
        #[arg(long, default_value_t = 40_000)]
        ttl_ms: u64,
        /// Drivers that keep reporting every 2 s.
        #[arg(long, default_value_t = 50)]
        fresh: usize,
        /// `limit` of each nearby search.
        #[arg(long, default_value_t = 5)]
        search_limit: usize,
        /// Longest wait, in seconds, for clean indexes once the whole fleet is stale (the
        /// run ends as soon as they are clean).
        #[arg(long, default_value_t = 180)]
        duration: u64,
        /// The service binary (default: `geodispatch` next to this binary, as
        /// `cargo build --release --workspace` leaves it).
        #[arg(long)]
        service_binary: Option<PathBuf>,
        /// Run the benchmark's redis-server under SCHED_FIFO (needs root), so that SLOWLOG
        /// counts Redis' own work rather than preemption by the processes sharing its cores.
        #[arg(long)]
        redis_realtime: bool,
    },
    /// Dispatch load while a fault is injected (Sentinel failover, killed or paused service
    /// instances, Redis restart from AOF): acknowledged writes lost, orders stuck, double
    /// assignments, fence rejections, seconds unavailable (docs/RELIABILITY.md).
    Faults {
        /// The fault.
        #[arg(value_enum)]
        scenario: geodispatch_testkit::faults::Scenario,
        /// Seconds during which new orders start.
        #[arg(long, default_value_t = 30)]
        duration: u64,
        /// Concurrent order loops.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Drivers in the fleet.
        #[arg(long, default_value_t = 2_000)]
        drivers: usize,
        /// Seconds into the load when the single fault happens (failover, Redis restart).
        #[arg(long, default_value_t = 10)]
        fault_at: u64,
        /// Seconds between faults (instance kills and pauses).
        #[arg(long, default_value_t = 4)]
        fault_every: u64,
        /// `min-replicas-to-write` on the Sentinel primary (0: off).
        #[arg(long, default_value_t = 0)]
        min_replicas_to_write: u32,
        /// Replicas that must `WAIT`-confirm each order write before it is acknowledged.
        #[arg(long, default_value_t = 0)]
        wait_replicas: u32,
        /// Sentinel failover: stall the replicas and cut their replication links this many ms
        /// before killing the primary.
        #[arg(long, default_value_t = 0)]
        replica_lag_ms: u64,
        /// Redis restart: `appendfsync always` instead of `everysec`.
        #[arg(long)]
        fsync_always: bool,
        /// The service binary whose `serve` processes are faulted (default: `geodispatch` next
        /// to this binary, as `cargo build --release --workspace` leaves it).
        #[arg(long)]
        service_binary: Option<PathBuf>,
    },
    /// Single PUT vs our no-Redis /healthz; batch ingest vs redis-benchmark -P 16 GEOADD.
    Ingest {
        /// Seconds per measured phase.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Concurrent connections for single requests.
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// Concurrent connections for batches.
        #[arg(long, default_value_t = 4)]
        batch_connections: usize,
        /// HTTP worker threads of the service.
        #[arg(long, default_value_t = 2)]
        http_workers: usize,
    },
}

#[derive(Debug, Subcommand)]
enum ReplayCommand {
    /// Replay a Meal Delivery Routing Problem day (Grubhub / Georgia Tech instance directory):
    /// orders placed at their times, couriers played by the tool; writes the authors' three
    /// solution files and summary.json, checks feasibility, prints the measures.
    Mdrp(Box<MdrpArgs>),
}

/// Knobs of `replay mdrp`.
#[derive(Debug, clap::Args)]
struct MdrpArgs {
    /// The instance directory (restaurants.txt, orders.txt, couriers.txt, instance_parameters.txt).
    instance: PathBuf,
    /// Dispatch policy of the service the tool starts: greedy or batched.
    #[arg(long, default_value = "greedy")]
    policy: String,
    /// Simulated time runs this many times faster than real time (80: a simulated minute
    /// every 750 ms).
    #[arg(long, default_value_t = replay::DEFAULT_SPEED)]
    speed: f64,
    /// Simulated minutes between two matching rounds (batched policy).
    #[arg(long, default_value_t = 1.0)]
    round_min: f64,
    /// Rounds (batched policy) count on couriers carrying an order who will be free within
    /// this many simulated minutes; 0: only free couriers.
    #[arg(long, default_value_t = replay::DEFAULT_BUSY_HORIZON_MIN)]
    busy_horizon_min: f64,
    /// Simulated minutes rounds aim to have the courier at the restaurant before the food is
    /// ready, beyond half the pickup service.
    #[arg(long, default_value_t = replay::DEFAULT_LEAD_MARGIN_MIN)]
    lead_margin_min: f64,
    /// Rounds (batched policy) send idle couriers toward the restaurants of the last hour's
    /// orders (the service's `reposition_idle_drivers`); a courier follows each such move
    /// unless busy or already moving.
    #[arg(long)]
    reposition: bool,
    /// A running service (http://host:port) instead of one started by the tool; it must
    /// serve the instance's area (see --write-service-files) and its settings are its own.
    #[arg(long)]
    url: Option<String>,
    /// API key (dispatcher or admin) for --url.
    #[arg(long, env = "GD_KEY")]
    key: Option<String>,
    /// Output directory (default: a new temporary directory).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The service binary to start (default: `geodispatch` next to this binary).
    #[arg(long)]
    service_binary: Option<PathBuf>,
    /// Only write cities.geojson and service.env (the settings this replay would use) into
    /// --out, for a service started by hand, and exit.
    #[arg(long)]
    write_service_files: bool,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
}

#[derive(Debug, Subcommand)]
enum SeedCommand {
    /// Regenerate the deterministic fleet and sample orders.
    Generate {
        /// Output directory.
        #[arg(long, default_value = "seed-data")]
        out: PathBuf,
        /// Random seed.
        #[arg(long, default_value_t = seed::DEFAULT_SEED)]
        random_seed: u64,
        /// Drivers per city.
        #[arg(long, default_value_t = seed::DEFAULT_DRIVERS_PER_CITY)]
        drivers_per_city: usize,
        /// Orders per city.
        #[arg(long, default_value_t = seed::DEFAULT_ORDERS_PER_CITY)]
        orders_per_city: usize,
        /// GeoJSON service areas (default: the built-in cities).
        #[arg(long)]
        cities: Option<PathBuf>,
    },
}

/// Knobs of `geodispatch sim`.
#[derive(Debug, clap::Args)]
struct SimArgs {
    /// Base URL of a running service (http://host:port); default: start one in-process with its own redis-server.
    #[arg(long)]
    url: Option<String>,
    /// API key (dispatcher or admin) for --url; its rate limits apply (the in-process service has none).
    #[arg(long, env = "GD_KEY")]
    key: Option<String>,
    /// City to simulate.
    #[arg(long, default_value = "paris")]
    city: String,
    /// Number of drivers (random walks inside the city outline, 4–14 m/s).
    #[arg(long, default_value_t = 1_000)]
    drivers: usize,
    /// Seconds during which orders arrive.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Seconds between two position reports of a driver.
    #[arg(long, default_value_t = 5.0)]
    report_every: f64,
    /// Report positions one PUT per driver instead of batches of 1,000.
    #[arg(long)]
    single: bool,
    /// Mean order arrivals per second (Poisson process).
    #[arg(long, default_value_t = 10.0)]
    orders_per_s: f64,
    /// Dispatch mode of the orders: now or queued.
    #[arg(long, default_value = "now")]
    dispatch: String,
    /// Probability that a driver accepts an offer.
    #[arg(long, default_value_t = 0.85)]
    accept: f64,
    /// Probability that a driver rejects an offer (the rest are ignored and expire).
    #[arg(long, default_value_t = 0.1)]
    reject: f64,
    /// Milliseconds between accepting and picking up.
    #[arg(long, default_value_t = 500)]
    pickup_delay_ms: u64,
    /// Milliseconds between picking up and delivering.
    #[arg(long, default_value_t = 1_000)]
    deliver_delay_ms: u64,
    /// Number of order hot spots (pickups cluster around them).
    #[arg(long, default_value_t = 5)]
    hotspots: usize,
    /// Spread of pickups around their hot spot, km.
    #[arg(long, default_value_t = 1.5)]
    spread_km: f64,
    /// Seconds to wait after the last arrival for open orders to end.
    #[arg(long, default_value_t = 30)]
    drain: u64,
    /// Concurrent HTTP connections for orders and answers.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Offer time to live (ms) of the in-process service (ignored with --url).
    #[arg(long, default_value_t = 3_000)]
    offer_ttl_ms: u64,
    /// Random seed (fleet, walks, arrivals, answers).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Run once per offered rate (comma-separated orders/s) and write the JSON and an SVG plot
    /// of latency against offered load into this directory (see --sweep-out).
    #[arg(long, value_delimiter = ',')]
    sweep: Vec<f64>,
    /// Directory for the sweep's sweep.json and latency.svg.
    #[arg(long, default_value = "docs/sim")]
    sweep_out: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Bench { command } => {
            // The service's per-request logs would cost the figures CPU: warnings only.
            geodispatch::http::telemetry::init_with_default(
                geodispatch::config::LogFormat::Text,
                "warn,geodispatch_tools=info",
            );
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the tokio runtime")?;
            let result = runtime.block_on(async {
                match command {
                    BenchCommand::Nearby {
                        sizes,
                        duration,
                        connections,
                        http_workers,
                        postgis_script,
                        redis_realtime,
                        motion,
                    } => {
                        let rows = bench::nearby(bench::NearbyOptions {
                            sizes,
                            duration: std::time::Duration::from_secs(duration),
                            connections,
                            http_workers,
                            postgis_script: (postgis_script != "none").then(|| PathBuf::from(postgis_script)),
                            redis_realtime,
                            motion,
                        })
                        .await?;
                        anyhow::Ok(serde_json::json!({"scenario": "nearby", "duration_s": duration, "connections": connections, "redis_realtime": redis_realtime, "motion": motion, "rows": rows}))
                    }
                    BenchCommand::Dispatch {
                        drivers,
                        duration,
                        concurrency,
                        http_workers,
                    } => {
                        let r = bench::dispatch(bench::DispatchOptions {
                            drivers,
                            duration: std::time::Duration::from_secs(duration),
                            concurrency,
                            http_workers,
                        })
                        .await?;
                        anyhow::Ok(serde_json::json!({"scenario": "dispatch", "duration_s": duration, "result": r}))
                    }
                    BenchCommand::Match {
                        orders,
                        drivers,
                        rounds,
                    } => {
                        let r = bench::matching(bench::MatchOptions {
                            orders,
                            drivers,
                            rounds,
                        })
                        .await?;
                        anyhow::Ok(serde_json::json!({"scenario": "match", "result": r}))
                    }
                    BenchCommand::Faults {
                        scenario,
                        duration,
                        concurrency,
                        drivers,
                        fault_at,
                        fault_every,
                        min_replicas_to_write,
                        wait_replicas,
                        replica_lag_ms,
                        fsync_always,
                        service_binary,
                    } => {
                        let binary = geodispatch_tools::replay::service_binary(service_binary)?;
                        let mut opts = geodispatch_testkit::faults::FaultOptions::new(scenario, binary);
                        opts.duration = std::time::Duration::from_secs(duration);
                        opts.concurrency = concurrency;
                        opts.drivers = drivers;
                        opts.fault_at = std::time::Duration::from_secs(fault_at);
                        opts.fault_every = std::time::Duration::from_secs(fault_every);
                        opts.min_replicas_to_write = min_replicas_to_write;
                        opts.wait_replicas = wait_replicas;
                        opts.replica_lag_ms = replica_lag_ms;
                        opts.fsync_always = fsync_always;
                        let r = geodispatch_testkit::faults::faults(opts).await?;
                        anyhow::Ok(serde_json::json!({"scenario": "faults", "duration_s": duration, "concurrency": concurrency, "result": r}))
                    }
                    BenchCommand::Stale {
                        drivers,
                        ttl_ms,
                        fresh,
                        search_limit,
                        duration,
                        service_binary,
                        redis_realtime,
                    } => {
                        let r = bench::stale(bench::StaleOptions {
                            drivers,
                            ttl_ms,
                            fresh,
                            search_limit,
                            duration: std::time::Duration::from_secs(duration),
                            service_binary: geodispatch_tools::replay::service_binary(
                                service_binary,
                            )?,
                            redis_realtime,
                        })
                        .await?;
                        anyhow::Ok(serde_json::json!({"scenario": "stale", "result": r}))
                    }
                    BenchCommand::Ingest {
                        duration,
                        connections,
                        batch_connections,
                        http_workers,
                    } => {
                        let r = bench::ingest(bench::IngestOptions {
                            duration: std::time::Duration::from_secs(duration),
                            connections,
                            batch_connections,
                            http_workers,
                        })
                        .await?;
                        anyhow::Ok(serde_json::json!({"scenario": "ingest", "duration_s": duration, "connections": connections, "result": r}))
                    }
                }
            })?;
            println!("{}", serde_json::to_string_pretty(&result)?);
            Ok(())
        }
        Command::Sim(a) => {
            geodispatch::http::telemetry::init_with_default(
                geodispatch::config::LogFormat::Text,
                "warn",
            );
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the tokio runtime")?;
            let opts = sim::SimOptions {
                url: a.url,
                key: a.key,
                city: a.city,
                drivers: a.drivers,
                duration: std::time::Duration::from_secs(a.duration),
                report_every: std::time::Duration::from_secs_f64(a.report_every.max(0.1)),
                batch: !a.single,
                orders_per_s: a.orders_per_s,
                dispatch: a.dispatch,
                accept: a.accept,
                reject: a.reject,
                pickup_delay: std::time::Duration::from_millis(a.pickup_delay_ms),
                deliver_delay: std::time::Duration::from_millis(a.deliver_delay_ms),
                hotspots: a.hotspots,
                spread_km: a.spread_km,
                seed: a.seed,
                drain: std::time::Duration::from_secs(a.drain),
                connections: a.connections,
                offer_ttl_ms: a.offer_ttl_ms,
                progress: !a.quiet,
            };
            if !a.sweep.is_empty() {
                let points = runtime.block_on(sim::sweep(opts.clone(), &a.sweep))?;
                std::fs::create_dir_all(&a.sweep_out)?;
                let json = serde_json::to_string_pretty(&points)?;
                std::fs::write(a.sweep_out.join("sweep.json"), &json)?;
                let title = format!(
                    "geodispatch-tools sim: {} drivers, create-and-dispatch latency vs offered load",
                    opts.drivers
                );
                std::fs::write(
                    a.sweep_out.join("latency.svg"),
                    sim::sweep_svg(&points, &title),
                )?;
                println!("{json}");
                anyhow::ensure!(
                    points.iter().all(|p| p.ok),
                    "a sweep run had invariant violations or lost orders"
                );
                return Ok(());
            }
            let report = runtime.block_on(sim::run(opts))?;
            let text = serde_json::to_string_pretty(&report)?;
            if let Some(path) = a.json {
                std::fs::write(&path, &text)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            eprintln!("{}", sim::summary(&report));
            println!("{text}");
            if !report.ok() {
                anyhow::bail!("invariant violations or lost orders: see the report");
            }
            Ok(())
        }
        Command::Replay {
            command: ReplayCommand::Mdrp(a),
        } => {
            geodispatch::http::telemetry::init_with_default(
                geodispatch::config::LogFormat::Text,
                "warn",
            );
            let opts = replay::ReplayOptions {
                instance: a.instance,
                policy: a.policy,
                speed: a.speed,
                round_min: a.round_min,
                busy_horizon_min: a.busy_horizon_min,
                lead_margin_min: a.lead_margin_min,
                reposition: a.reposition,
                url: a.url,
                key: a.key,
                out: a.out,
                service_binary: a.service_binary,
                progress: !a.quiet,
            };
            if a.write_service_files {
                let out = opts
                    .out
                    .clone()
                    .context("--write-service-files needs --out")?;
                replay::write_service_files(&opts, &out)?;
                println!(
                    "wrote {0}/cities.geojson and {0}/service.env",
                    out.display()
                );
                return Ok(());
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("starting the tokio runtime")?;
            let report = runtime.block_on(replay::run(opts))?;
            println!("{}", replay::summary(&report));
            Ok(())
        }
        Command::Seed {
            command:
                SeedCommand::Generate {
                    out,
                    random_seed,
                    drivers_per_city,
                    orders_per_city,
                    cities,
                },
        } => {
            let cities = geodispatch::cities::CityIndex::load(cities.as_deref())?;
            let (drivers, orders) =
                seed::generate(&cities, random_seed, drivers_per_city, orders_per_city);
            seed::write(&out, &drivers, &orders)?;
            println!(
                "wrote {} drivers and {} orders to {}",
                drivers.len(),
                orders.len(),
                out.display()
            );
            Ok(())
        }
    }
}
