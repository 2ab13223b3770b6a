//! The command-line interface: argument parsing here, one file per subcommand.

mod apply;
pub mod backend;
pub mod bench;
mod db;
mod delete;
mod describe;
mod diff;
mod exec;
mod get;
mod history;
mod image;
mod input;
mod kubeconfig;
mod logs;
pub(crate) mod output;
pub mod ready;
mod rollout;
pub mod serve;
mod token;
mod top;
mod tree;
mod wait;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tend_schema::store::{OpenOptions, SqliteStore};

/// tend keeps one Linux host the way it was declared.
#[derive(Debug, Parser)]
#[command(name = "tend", version, about, propagate_version = true)]
pub struct Cli {
    /// Where tend keeps its database, locks and host-object bookkeeping.
    #[arg(
        long,
        global = true,
        env = "TEND_STATE_DIR",
        default_value = "/var/lib/tend"
    )]
    pub state_dir: PathBuf,
    /// Use the store directly even when a daemon runs (object commands otherwise go through
    /// the daemon's API on `<state-dir>/tend.sock`).
    #[arg(long, global = true, env = "TEND_DIRECT")]
    pub direct: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or update objects from YAML/JSON files, a directory, or stdin (`-`).
    Apply(apply::Args),
    /// List objects, or show one.
    Get(get::Args),
    /// Show one object in detail: spec, status, conditions, recent events.
    Describe(describe::Args),
    /// Delete objects by kind and name, or those named in files.
    Delete(delete::Args),
    /// Show what `apply` would change. Exit 0: no change, 1: changes, 2 or more: error.
    Diff(diff::Args),
    /// Inspect the database: dump, read-only query, integrity check.
    Db(db::Args),
    /// Run the daemon: reconcile loops and the API.
    Serve(serve::Args),
    /// Measure tend and print figures.
    Bench(bench::Args),
    /// Manage API bearer tokens.
    Token(token::Args),
    /// Print a kubeconfig for the running daemon (needs `tend serve --listen`).
    Kubeconfig(kubeconfig::Args),
    /// Print a container's output.
    Logs(logs::Args),
    /// Run a command inside a running container; exits with its exit code.
    Exec(exec::Args),
    /// Wait until an object has a condition (or is deleted), showing progress.
    Wait(wait::Args),
    /// Show what an object uses (dependencies, Sandbox/State, Networks), each with its Ready.
    Tree(tree::Args),
    /// Show what each running Container uses (CPU, memory, tasks), sorted; `-w` to follow.
    Top(top::Args),
    /// Every spec and status change of an object still in the change feed.
    History(history::Args),
    /// A Container's revisions, and going back to one (`history`, `undo`).
    Rollout(rollout::Args),
    /// Image content: `prune` what no State records (dry run unless --force).
    Image(image::Args),
    /// Internal: what the daemon runs to serve a native container's exec.
    #[command(hide = true)]
    ExecNative(exec::NativeArgs),
}

/// Runs a parsed command line; the exit code is what scripts see.
pub fn run(cli: Cli) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let diff_mode = matches!(cli.command, Command::Diff(_));
    match rt.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            // diff reserves 1 for "there are changes".
            ExitCode::from(if diff_mode { 2 } else { 1 })
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let dir = cli.state_dir;
    let backend = || backend::Backend::open(&dir, cli.direct);
    match cli.command {
        Command::Apply(a) => apply::run(&backend().await?, a).await,
        Command::Get(a) => get::run(&backend().await?, a).await,
        Command::Describe(a) => describe::run(&backend().await?, a).await,
        Command::Delete(a) => delete::run(&backend().await?, a).await,
        Command::Diff(a) => diff::run(&backend().await?, a).await,
        Command::Db(a) => db::run(&*open(&dir).await?, a).await,
        Command::Serve(a) => serve::run(&dir, a).await,
        Command::Bench(a) => bench::run(&dir, a).await,
        Command::Token(a) => token::run(&dir, a),
        Command::Kubeconfig(a) => kubeconfig::run(&dir, a),
        Command::Logs(a) => logs::run(&backend().await?, &dir, a).await,
        Command::Exec(a) => exec::run(&backend().await?, &dir, a).await,
        Command::Wait(a) => wait::run(&backend().await?, a).await,
        Command::Tree(a) => tree::run(&backend().await?, a).await,
        Command::Top(a) => top::run(&backend().await?, a).await,
        Command::Rollout(a) => rollout::run(&backend().await?, a).await,
        Command::Image(a) => image::run(&backend().await?, a).await,
        Command::History(a) => history::run(&backend().await?, a).await,
        Command::ExecNative(a) => exec::run_native(a),
    }
}

/// Opens the store in the state dir, creating the dir (0700) on first use.
pub async fn open(dir: &std::path::Path) -> anyhow::Result<Arc<SqliteStore>> {
    use anyhow::Context;
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating state dir {}", dir.display()))?;
    let store =
        SqliteStore::open(crate::daemon::Layout::new(dir).db(), OpenOptions::default()).await?;
    Ok(Arc::new(store))
}
