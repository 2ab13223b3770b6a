//! `tend serve`: parses the daemon's flags and runs it ([`crate::daemon::lifecycle::serve`]).

use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use crate::daemon::lifecycle::{serve, ServeOptions};
use crate::daemon::{DaemonConfig, Layout};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Reconciles running at once, per controller.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Every object is reconciled at least this often (seconds), to find unreported drift.
    #[arg(long, default_value_t = 60)]
    pub resync_seconds: u64,
    /// Also serve the API on this TCP address (bearer token required), e.g. 127.0.0.1:6443.
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// A name or address the listener's TLS certificate carries besides localhost, the
    /// loopback addresses, the listen address and (listening on 0.0.0.0/::) the host name;
    /// repeatable.
    #[arg(long = "tls-san", value_name = "NAME|IP", requires = "listen")]
    pub tls_sans: Vec<String>,
    /// Snapshot backend for States and Sandboxes: auto (btrfs, via an embedded loop image when
    /// the state dir is not on btrfs), btrfs, or copy.
    #[arg(long, default_value = "auto")]
    pub snapshot_backend: crate::snapshot::BackendMode,
    /// Size of the embedded btrfs image when one is created (sparse), e.g. 4Gi, 512Mi.
    #[arg(long, default_value = "4Gi", value_parser = tend_schema::Quantity::parse)]
    pub btrfs_image_size: tend_schema::Quantity,
    /// Use this existing btrfs mount for snapshots instead of an image.
    #[arg(long)]
    pub btrfs_root: Option<PathBuf>,
    /// Seconds a tree no object owns is left alone before it is removed.
    #[arg(long, default_value_t = 30)]
    pub orphan_grace_seconds: u64,
    /// Namespace-limited tokens may import States (directory, tarball) from under this
    /// directory; repeatable, none by default. Admin credentials are not limited.
    #[arg(long = "allow-source-dir", value_name = "DIR")]
    pub allow_source_dirs: Vec<PathBuf>,
    /// Registry credentials for image States: a docker `config.json` (as `docker login`
    /// writes it). Default: `$DOCKER_CONFIG/config.json` or `~/.docker/config.json` if present.
    #[arg(long, value_name = "FILE")]
    pub registry_auth: Option<PathBuf>,
    /// Fault injection for tests: read failpoints from `<state-dir>/failpoints` (or the file
    /// `TEND_FAILPOINTS` names, which turns them on too). Off by default: a daemon without it
    /// never looks for the file.
    #[arg(long)]
    pub failpoints: bool,
    /// How often the usage of native containers is sampled (`status.usage`, `tend top`,
    /// `/metrics`), seconds; one pass over every cgroup each time.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub usage_interval: u64,
    /// Native containers' logs are rotated when they would grow past this (`spec.logs.maxSize`
    /// overrides it per container).
    #[arg(long, default_value = "10Mi", value_parser = tend_schema::Quantity::parse)]
    pub log_max_size: tend_schema::Quantity,
    /// Log files kept per container, the current one included (`spec.logs.maxFiles`).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=99))]
    pub log_max_files: u32,
    /// First host uid/gid of the pool `securityContext.userNamespace` ranges are cut from
    /// (65536 ids per Container).
    #[arg(long, default_value_t = 1_000_000_000)]
    pub userns_first_id: u32,
    /// How many 65536-id ranges the pool holds (how many user-namespaced Containers may exist
    /// at once).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub userns_ranges: u32,
}

/// Runs the daemon on the state dir `dir` with these flags.
pub async fn run(dir: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let layout = Layout::new(dir);
    // Failpoints only when asked for: TEND_FAILPOINTS names one file for every daemon started
    // with it (the VM suite proves a broken limit write fails it this way); `--failpoints` reads
    // the state dir's own. Otherwise `check` returns at once, without a `stat`.
    match std::env::var_os("TEND_FAILPOINTS") {
        Some(file) => crate::failpoint::init(file.into()),
        None if args.failpoints => crate::failpoint::init(layout.failpoints()),
        None => {}
    }
    let store = super::open(dir).await?;
    let mut cfg = DaemonConfig::new(layout).context("reading the instance id")?;
    cfg.controller = tend_controllers::ControllerConfig {
        concurrency: args.concurrency,
        resync: Duration::from_secs(args.resync_seconds),
    };
    cfg.usage_interval = Duration::from_secs(args.usage_interval);
    anyhow::ensure!(
        args.log_max_size.value() >= tend_schema::kinds::container::MIN_LOG_SIZE,
        "--log-max-size {} is below the smallest size, 4Ki",
        args.log_max_size
    );
    cfg.log = crate::shim::LogLimits {
        max_bytes: args.log_max_size.value(),
        max_files: args.log_max_files,
    };
    cfg.snapshot = crate::snapshot::choose::SnapshotConfig {
        mode: args.snapshot_backend,
        image_size: args.btrfs_image_size.value(),
        btrfs_root: args.btrfs_root,
        orphan_grace: Duration::from_secs(args.orphan_grace_seconds),
    };
    cfg.registry_auth = args.registry_auth;
    cfg.id_pool = tend_schema::store::IdPool {
        first: args.userns_first_id,
        size: tend_schema::kinds::container::USERNS_IDS,
        count: args.userns_ranges,
    };
    cfg.id_pool
        .check()
        .map_err(|e| anyhow::anyhow!("--userns-first-id/--userns-ranges: {e}"))?;
    serve(
        store,
        cfg,
        ServeOptions {
            listen: args.listen,
            tls_sans: args.tls_sans,
            policy: tend_schema::policy::Policy::new(&args.allow_source_dirs)?,
        },
    )
    .await
}
