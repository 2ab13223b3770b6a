//! `tend bench`: measure tend and print figures (never asserted in tests; see docs/benchmarks.md).

use std::path::Path;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
}

#[derive(Debug, clap::Subcommand)]
pub enum What {
    /// The store: point get, list, bulk apply, create latency, watch delivery.
    Store {
        /// Objects for the list and apply figures.
        #[arg(long, default_value_t = 10_000)]
        objects: usize,
    },
    /// The controller runtime with a no-op reconciler: throughput, write→reconcile latency, idle CPU.
    Runtime {
        #[arg(long, default_value_t = 10_000)]
        objects: usize,
        /// How long to measure idle CPU.
        #[arg(long, default_value_t = 10)]
        idle_seconds: u64,
    },
}

pub async fn run(_dir: &Path, args: Args) -> anyhow::Result<ExitCode> {
    match args.what {
        What::Store { objects } => crate::bench::store(objects).await?,
        What::Runtime {
            objects,
            idle_seconds,
        } => crate::bench::runtime::run(objects, idle_seconds).await?,
    }
    Ok(ExitCode::SUCCESS)
}
