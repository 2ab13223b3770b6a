//! `tend bench rollback`: how long a failed Rollout takes to bring the previous revision back —
//! from the progress deadline to the previous revision Ready again with its data restored —
//! per snapshot backend, beside the same container's own stop+start (a Recreate spec change)
//! on the same daemon, which is the part of a rollback that is not tend's.
//!
//! The Container runs on its own Sandbox of a busybox State that also holds 50 MB of data
//! (what the copy backend copies on snapshot and restore).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;
use tend_schema::kinds::container::ContainerStatus;
use tend_schema::store::Store;
use tend_schema::{AnyObject, Kind, ObjectKey};

use super::daemon::{until_status, BenchDaemon, BenchOptions};
use super::snapshots::{write_tree, BENCH_TREE_BYTES};
use super::{note, Figure};
use crate::snapshot::choose::SnapshotConfig;
use crate::snapshot::BackendMode;

/// The workload: exits at once on SIGTERM, so stopping costs no grace period.
const SCRIPT: &str = "trap 'exit 0' TERM; while true; do sleep 0.05; done";

fn spec(strategy: serde_json::Value, ready: &str, tag: usize) -> serde_json::Value {
    json!({
        "rootfs": {"sandbox": "data"},
        "command": ["/bin/sh", "-c", SCRIPT],
        "env": [{"name": "TAG", "value": tag.to_string()}],
        "stopGracePeriodSeconds": 1,
        "probes": {"readiness": {"exec": {"command": ["/bin/sh", "-c", ready]}, "periodSeconds": 1}},
        "updateStrategy": strategy,
    })
}

fn ready(s: &ContainerStatus, g: i64) -> bool {
    s.rollout.is_none()
        && s.common.observed_generation == g
        && s.common
            .condition("Ready")
            .is_some_and(|c| c.status == tend_schema::ConditionStatus::True)
}

fn progressing_reason(s: &ContainerStatus) -> Option<&str> {
    s.common.condition("Progressing").map(|c| c.reason.as_str())
}

/// What one backend measured.
pub struct Measured {
    pub backend: &'static str,
    pub rollback: Vec<Duration>,
    pub start: Vec<Duration>,
}

/// Runs `rounds` rollbacks and `rounds` plain restarts on a fresh daemon with backend `mode`.
pub async fn measure(mode: BackendMode, rounds: usize) -> anyhow::Result<Measured> {
    let opts = BenchOptions {
        snapshot: SnapshotConfig {
            mode,
            image_size: 2 << 30,
            ..Default::default()
        },
        ..BenchOptions::default()
    };
    let d = BenchDaemon::start("rollback", opts).await?;
    let result = run(&d, rounds).await;
    let stopped = d.stop().await;
    let r = result?;
    stopped?;
    Ok(r)
}

async fn write_spec(
    d: &BenchDaemon,
    key: &ObjectKey,
    spec: serde_json::Value,
) -> anyhow::Result<i64> {
    let mut o = d.store.get(key).await?;
    o.spec = spec;
    Ok(d.store.update(o).await?.metadata.generation)
}

async fn run(d: &BenchDaemon, rounds: usize) -> anyhow::Result<Measured> {
    let root = super::container::busybox_rootfs(&d.dir)?;
    write_tree(&root.join("data"), BENCH_TREE_BYTES)?;
    let s = &d.store;
    s.create(AnyObject::new(
        Kind::State,
        "default",
        "busybox",
        json!({"source": {"directory": root}}),
    ))
    .await?;
    s.create(AnyObject::new(
        Kind::Sandbox,
        "default",
        "data",
        json!({"state": "busybox"}),
    ))
    .await?;
    let key = ObjectKey::new(Kind::Container, "default", "app");
    let rollout = json!({"type": "Rollout", "snapshotData": true, "progressDeadlineSeconds": 1, "revisionHistoryLimit": 3});
    let recreate = json!({"type": "Recreate"});
    s.create(AnyObject::new(
        Kind::Container,
        "default",
        "app",
        spec(rollout.clone(), "true", 0),
    ))
    .await?;
    let every = Duration::from_millis(1);
    until_status(s, &key, every, |st| ready(st, 1))
        .await
        .context("the first revision never got Ready")?;
    let sb = s
        .get(&ObjectKey::new(Kind::Sandbox, "default", "data"))
        .await?;
    let backend = match sb.status["backend"].as_str() {
        Some("btrfs") => "btrfs",
        _ => "copy",
    };
    let mut rollback = Vec::new();
    let mut tag = 1;
    for _ in 0..rounds {
        // A revision whose readiness never passes.
        let g = write_spec(d, &key, spec(rollout.clone(), "false", tag)).await?;
        tag += 1;
        let st = until_status(s, &key, every, |st| {
            st.rollout
                .as_ref()
                .is_some_and(|r| r.to_generation == g && r.deadline.is_some())
        })
        .await?;
        let deadline = st.rollout.and_then(|r| r.deadline).context("no deadline")?;
        until_status(s, &key, every, |st| {
            ready(st, g) && progressing_reason(st) == Some("RolledBack")
        })
        .await
        .context("never rolled back")?;
        let took = (chrono::Utc::now() - deadline).to_std().unwrap_or_default();
        rollback.push(took);
    }
    // The container's own stop+start: a Recreate spec change to an always-ready revision.
    let mut start = Vec::new();
    for _ in 0..rounds {
        let t0 = Instant::now();
        let g = write_spec(d, &key, spec(recreate.clone(), "true", tag)).await?;
        tag += 1;
        until_status(s, &key, every, |st| {
            ready(st, g) && st.rolled_back.is_none()
        })
        .await
        .context("the restart never got Ready")?;
        start.push(t0.elapsed());
    }
    Ok(Measured {
        backend,
        rollback,
        start,
    })
}

/// Both backends, printed as figures, and whether the target (100 ms beyond the container's
/// own start, at the median, on btrfs) was met.
pub async fn run_all(rounds: usize) -> anyhow::Result<()> {
    for mode in [BackendMode::Btrfs, BackendMode::Copy] {
        let m = measure(mode, rounds).await?;
        let p50 = |v: &[Duration]| {
            let mut v = v.to_vec();
            super::sort_percentile(&mut v, 0.5)
        };
        let (rb, st) = (p50(&m.rollback), p50(&m.start));
        super::emit(&Figure::latency(
            format!(
                "rollback: deadline -> previous revision Ready, data restored ({}, 50 MB Sandbox)",
                m.backend
            ),
            m.rollback,
        ));
        super::emit(&Figure::latency(
            format!(
                "container's own stop+start -> Ready (Recreate, {})",
                m.backend
            ),
            m.start,
        ));
        let extra = rb.saturating_sub(st);
        super::emit(&Figure::scalar(
            format!(
                "rollback beyond the container's own start, p50 ({})",
                m.backend
            ),
            extra.as_secs_f64() * 1000.0,
            "ms",
        ));
        if m.backend == "btrfs" {
            note(format!(
                "target (btrfs): rollback p50 under 100 ms plus the container's own start: {} ({:.1} ms beyond it)",
                if extra < Duration::from_millis(100) { "met" } else { "NOT met" },
                extra.as_secs_f64() * 1000.0
            ));
        }
    }
    Ok(())
}
