//! The `geodispatch` binary: command-line parsing and dispatch to the library.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use geodispatch::config::Settings;

/// Delivery-dispatch microservice on Redis.
#[derive(Debug, Parser)]
#[command(name = "geodispatch", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP service. Without GEODISPATCH_REDIS_URL it starts its own redis-server.
    Serve {
        /// TOML settings file (overridden by GEODISPATCH_* variables).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Load seed data from this directory at startup (e.g. `seed-data`).
        #[arg(long)]
        seed: Option<PathBuf>,
    },
    /// Print the OpenAPI document as JSON.
    Openapi,
    /// Seed data tools.
    Seed {
        #[command(subcommand)]
        command: SeedCommand,
    },
}

#[derive(Debug, Subcommand)]
enum SeedCommand {
    /// Regenerate the deterministic fleet and sample orders.
    Generate {
        /// Output directory.
        #[arg(long, default_value = "seed-data")]
        out: PathBuf,
        /// Random seed.
        #[arg(long, default_value_t = geodispatch::seed::DEFAULT_SEED)]
        random_seed: u64,
        /// Drivers per city.
        #[arg(long, default_value_t = geodispatch::seed::DEFAULT_DRIVERS_PER_CITY)]
        drivers_per_city: usize,
        /// Orders per city.
        #[arg(long, default_value_t = geodispatch::seed::DEFAULT_ORDERS_PER_CITY)]
        orders_per_city: usize,
        /// GeoJSON service areas (default: the built-in cities).
        #[arg(long)]
        cities: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, seed } => {
            let mut settings = Settings::from_env(config.as_deref())?;
            if seed.is_some() {
                settings.seed = seed;
            }
            geodispatch::telemetry::init(settings.log_format);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the tokio runtime")?;
            runtime
                .block_on(geodispatch::startup::serve(settings))
                .inspect_err(|err| {
                    tracing::error!(
                        error = format!("{err:#}"),
                        "geodispatch stopped with an error"
                    );
                })
        }
        Command::Openapi => {
            print!("{}", geodispatch::openapi::spec_json());
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
            let (drivers, orders) = geodispatch::seed::generate(
                &cities,
                random_seed,
                drivers_per_city,
                orders_per_city,
            );
            geodispatch::seed::write(&out, &drivers, &orders)?;
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
