//! `tend bench sandbox`: apply→Ready of Sandboxes from a 50 MB State through a real in-process
//! daemon (store, runtime, controller, backend), on btrfs (embedded image) or copy.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use futures::StreamExt;
use tend_schema::store::{DeleteOptions, Store, WatchStream};
use tend_schema::{AnyObject, Kind, ObjectKey};

use super::daemon::{BenchDaemon, BenchOptions};
use super::snapshots::{write_tree, BENCH_TREE_BYTES};
use super::{until, Figure};
use crate::snapshot::choose::SnapshotConfig;
use crate::snapshot::BackendMode;

/// Runs the benchmark in a temp state dir (removed afterwards, image unmounted): `latency`
/// Sandboxes one after another, then `burst` applied at once. The figures name the backend the
/// Sandboxes reported.
pub async fn bench_sandbox(
    mode: BackendMode,
    latency: usize,
    burst: usize,
) -> anyhow::Result<Vec<Figure>> {
    let opts = BenchOptions {
        snapshot: SnapshotConfig {
            mode,
            image_size: 8 << 30,
            ..Default::default()
        },
        ..BenchOptions::default()
    };
    let d = BenchDaemon::start("sb", opts).await?;
    let result = run(&d, latency, burst).await;
    let stopped = d.stop().await;
    let r = result?;
    stopped?;
    Ok(r)
}

async fn run(d: &BenchDaemon, latency: usize, burst: usize) -> anyhow::Result<Vec<Figure>> {
    let src = d.dir.join("src");
    write_tree(&src, BENCH_TREE_BYTES)?;
    let store = d.store.clone();
    let s: Arc<dyn Store> = store;
    let mut feed = s.watch(s.revision().await?).await?;
    s.create(AnyObject::new(
        Kind::State,
        "default",
        "base",
        serde_json::json!({"source": {"directory": src}}),
    ))
    .await?;
    let backend = wait_ready(&mut feed, ["base".to_string()].into()).await?;
    let mut samples = Vec::new();
    for i in 0..latency {
        let name = format!("lat-{i}");
        let t0 = Instant::now();
        s.create(sandbox(&name)).await?;
        wait_ready(&mut feed, [name].into()).await?;
        samples.push(t0.elapsed());
    }
    let names: HashSet<String> = (0..burst).map(|i| format!("burst-{i}")).collect();
    let t0 = Instant::now();
    for n in &names {
        s.create(sandbox(n)).await?;
    }
    wait_ready(&mut feed, names.clone()).await?;
    let burst_took = t0.elapsed();
    let all: Vec<String> = names
        .into_iter()
        .chain((0..latency).map(|i| format!("lat-{i}")))
        .collect();
    for n in &all {
        s.delete(
            &ObjectKey::new(Kind::Sandbox, "default", n),
            &DeleteOptions::default(),
        )
        .await?;
    }
    s.delete(
        &ObjectKey::new(Kind::State, "default", "base"),
        &DeleteOptions::default(),
    )
    .await?;
    let base = ObjectKey::new(Kind::State, "default", "base");
    until(
        Duration::from_secs(120),
        Duration::from_millis(50),
        || async { s.get(&base).await.is_err() },
    )
    .await;
    Ok(vec![
        Figure::latency(format!("sandbox apply -> Ready ({backend})"), samples),
        Figure::rate(
            format!("sandboxes at once -> Ready ({backend})"),
            burst,
            burst_took,
        ),
    ])
}

fn sandbox(name: &str) -> AnyObject {
    AnyObject::new(
        Kind::Sandbox,
        "default",
        name,
        serde_json::json!({"state": "base"}),
    )
}

/// Follows the feed until every name is Ready; returns the backend they report.
async fn wait_ready(feed: &mut WatchStream, mut names: HashSet<String>) -> anyhow::Result<String> {
    let mut backend = String::new();
    while !names.is_empty() {
        let ev = tokio::time::timeout(Duration::from_secs(120), feed.next())
            .await
            .context("timed out waiting for Ready")?;
        let Some(ev) = ev else {
            bail!("change feed ended")
        };
        let o = ev?.object;
        if o.status.get("phase").and_then(|p| p.as_str()) == Some("Ready")
            && names.remove(&o.metadata.name)
        {
            backend = o.status["backend"].as_str().unwrap_or("").to_string();
        }
        if o.status.get("phase").and_then(|p| p.as_str()) == Some("Failed") {
            bail!("{} failed: {}", o.metadata.name, o.status);
        }
    }
    Ok(backend)
}
