//! A small snapshot benchmark for `tend bench sandbox`: writable snapshots of a 50 MB State.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::RngCore;

use crate::snapshot::{Error, Result, SnapshotBackend, Tree};
use crate::util::blocking;

/// Size of the benchmark State: 50 MB in 500 files of 100 kB across 10 directories.
pub const BENCH_TREE_BYTES: u64 = 50_000_000;

/// What one benchmark run measured.
#[derive(Clone, Debug)]
pub struct BenchFigures {
    /// `btrfs` or `copy`.
    pub backend: &'static str,
    /// Bytes in the source State.
    pub tree_bytes: u64,
    /// Time to import the State from a host directory.
    pub import: Duration,
    /// Number of writable snapshots taken.
    pub snapshots: usize,
    /// Median snapshot latency.
    pub p50: Duration,
    /// 99th-percentile snapshot latency.
    pub p99: Duration,
    /// Slowest snapshot.
    pub max: Duration,
    /// Snapshots per second, taken one after another.
    pub per_second: f64,
    /// Time to delete all snapshots and the State.
    pub cleanup: Duration,
}

impl std::fmt::Display for BenchFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} MB state imported in {:.0?}; {} writable snapshots: p50 {:.2?}, p99 {:.2?}, \
             max {:.2?}, {:.0}/s; cleanup {:.0?}",
            self.backend,
            self.tree_bytes / 1_000_000,
            self.import,
            self.snapshots,
            self.p50,
            self.p99,
            self.max,
            self.per_second,
            self.cleanup
        )
    }
}

/// Imports a 50 MB State and takes `n` writable snapshots of it, one after another; removes
/// everything it made (also on error).
pub async fn bench_snapshots<B: SnapshotBackend + ?Sized>(
    backend: &B,
    n: usize,
) -> Result<BenchFigures> {
    bench_snapshots_sized(backend, n, BENCH_TREE_BYTES).await
}

/// [`bench_snapshots`] with a chosen tree size. The source tree is written to a host temp
/// directory (outside the backend root, as imports require) and removed afterwards.
pub async fn bench_snapshots_sized<B: SnapshotBackend + ?Sized>(
    backend: &B,
    n: usize,
    tree_bytes: u64,
) -> Result<BenchFigures> {
    let tag = format!("bench-{:08x}", rand::random::<u32>());
    let src = std::env::temp_dir().join(format!("tend-{tag}"));
    let state = Tree::state(tag.clone())?;
    let sandboxes: Vec<Tree> = (0..n)
        .map(|i| Tree::sandbox(format!("{tag}-{i}")))
        .collect::<Result<_>>()?;

    let result = run(backend, &src, tree_bytes, &state, &sandboxes).await;
    let started = Instant::now();
    for t in &sandboxes {
        backend.delete(t).await?;
    }
    backend.delete(&state).await?;
    let cleanup = started.elapsed();
    let src2 = src.clone();
    blocking(move || std::fs::remove_dir_all(&src2))
        .await
        .map_err(Error::io("rmtree", &src))?;
    let mut figures = result?;
    figures.cleanup = cleanup;
    Ok(figures)
}

async fn run<B: SnapshotBackend + ?Sized>(
    backend: &B,
    src: &Path,
    tree_bytes: u64,
    state: &Tree,
    sandboxes: &[Tree],
) -> Result<BenchFigures> {
    let dir = src.to_path_buf();
    blocking(move || write_tree(&dir, tree_bytes)).await?;
    let started = Instant::now();
    let info = backend.import_dir(state, src).await?;
    let import = started.elapsed();

    let mut lat = Vec::with_capacity(sandboxes.len());
    let all = Instant::now();
    for t in sandboxes {
        let one = Instant::now();
        backend.snapshot(state, t, false).await?;
        lat.push(one.elapsed());
    }
    let total = all.elapsed();
    lat.sort();
    let pick = |q: f64| {
        lat.get(((lat.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .copied()
    };
    Ok(BenchFigures {
        backend: backend.name(),
        tree_bytes: info.size_bytes,
        import,
        snapshots: lat.len(),
        p50: pick(0.50).unwrap_or_default(),
        p99: pick(0.99).unwrap_or_default(),
        max: lat.last().copied().unwrap_or_default(),
        per_second: lat.len() as f64 / total.as_secs_f64().max(f64::EPSILON),
        cleanup: Duration::ZERO,
    })
}

/// Writes `bytes` of random data as 100 kB files spread over 10 directories.
pub(crate) fn write_tree(dir: &Path, bytes: u64) -> Result<()> {
    const FILE: usize = 100_000;
    let mut buf = vec![0u8; FILE];
    let mut left = bytes;
    let mut i = 0usize;
    while left > 0 {
        let sub: PathBuf = dir.join(format!("d{}", i % 10));
        std::fs::create_dir_all(&sub).map_err(Error::io("mkdir", &sub))?;
        let len = left.min(FILE as u64) as usize;
        rand::rng().fill_bytes(&mut buf[..len]);
        let f = sub.join(format!("f{i}"));
        std::fs::write(&f, &buf[..len]).map_err(Error::io("write", &f))?;
        left -= len as u64;
        i += 1;
    }
    Ok(())
}
