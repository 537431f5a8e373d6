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
        /// Dispatch queue workers in this instance (default 2; setting `dispatch_workers`).
        #[arg(long)]
        workers: Option<usize>,
    },
    /// Print the OpenAPI document as JSON.
    Openapi,
    /// Bring the Redis data to the current key layout (from layout 1: one big last-seen set and
    /// directory hash, city-prefixed packed states), then print the layouts and what changed
    /// as JSON. Stop every service instance first; running it again is harmless.
    Migrate {
        /// TOML settings file (overridden by GEODISPATCH_* variables).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            seed,
            workers,
        } => {
            let mut settings = Settings::from_env(config.as_deref())?;
            if seed.is_some() {
                settings.seed = seed;
            }
            if let Some(workers) = workers {
                settings.dispatch_workers = workers;
            }
            geodispatch::http::telemetry::init(settings.log_format);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the tokio runtime")?;
            runtime
                .block_on(geodispatch::app::serve(settings))
                .inspect_err(|err| {
                    tracing::error!(
                        error = format!("{err:#}"),
                        "geodispatch stopped with an error"
                    );
                })
        }
        Command::Migrate { config } => {
            let settings = Settings::from_env(config.as_deref())?;
            geodispatch::http::telemetry::init(settings.log_format);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the tokio runtime")?;
            let report = runtime.block_on(geodispatch::app::migrate(settings))?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Command::Openapi => {
            print!("{}", geodispatch::http::openapi::spec_json());
            Ok(())
        }
    }
}
