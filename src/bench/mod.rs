//! `tend bench` figures: each function measures one part of tend and prints what it saw.
//! Figures are recorded in docs/benchmarks.md with the command that produced them.

pub mod api;
pub mod container;
pub mod daemon;
pub mod docker;
pub mod drift;
pub mod netlink;
pub mod network;
pub mod runtime;
pub mod sandbox;
pub mod snapshots;

use futures::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tend_schema::store::{ListQuery, OpenOptions, SqliteStore, Store};
use tend_schema::{AnyObject, Kind, ObjectKey};

/// The `p` quantile (0.0–1.0) of sorted durations, nearest rank; zero when there are none.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Sorts `v`, then [`percentile`].
pub fn sort_percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort_unstable();
    percentile(v, p)
}

/// [`percentile`] in microseconds.
pub fn pct(sorted: &[Duration], p: f64) -> f64 {
    percentile(sorted, p).as_secs_f64() * 1e6
}

/// Calls `check` every `every` until it returns true or `limit` has passed; says which.
pub async fn until<F, Fut>(limit: Duration, every: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(every).await;
    }
}

pub fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{name:<34} n={:<6} p50={:>9.1}µs  p99={:>9.1}µs  max={:>9.1}µs",
        samples.len(),
        pct(&samples, 0.5),
        pct(&samples, 0.99),
        pct(&samples, 1.0)
    );
}

/// `tend bench store`: point get, list, bulk apply, create latency, watch delivery.
pub async fn store(n: usize) -> anyhow::Result<()> {
    let tmp = TempDir::new("store")?;
    let dir = tmp.0.clone();
    let store = Arc::new(SqliteStore::open(dir.join("tend.db"), OpenOptions::default()).await?);
    println!(
        "tend bench store: {n} objects, database in {}",
        dir.display()
    );

    // Bulk apply through the same path as `tend apply -f`: one YAML file, decoded and applied.
    let mut yaml = String::new();
    for i in 0..n {
        yaml.push_str(&format!(
            "---\napiVersion: tend.dev/v1\nkind: Container\nmetadata:\n  name: c{i}\n  labels: {{app: bench, shard: s{}}}\nspec:\n  command: [/bin/sleep, '3600']\n  resources: {{memory: 64Mi, cpu: 250m}}\n",
            i % 10
        ));
    }
    let t = Instant::now();
    let docs = tend_schema::decode::decode_all(&yaml)?;
    let objs: Vec<AnyObject> = docs
        .into_iter()
        .map(|d| d.result)
        .collect::<Result<_, _>>()?;
    let decoded = t.elapsed();
    store.apply(objs, false).await?;
    let total = t.elapsed();
    println!(
        "{:<34} {n} objects in {:.0} ms (decode {:.0} ms) = {:.0} objects/s",
        "apply one file",
        total.as_secs_f64() * 1e3,
        decoded.as_secs_f64() * 1e3,
        n as f64 / total.as_secs_f64()
    );

    let mut samples = Vec::new();
    for i in 0..20_000 {
        let key = ObjectKey::new(Kind::Container, "default", format!("c{}", i % n));
        let t = Instant::now();
        store.get(&key).await?;
        samples.push(t.elapsed());
    }
    report("get one object", samples);

    let mut samples = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let l = store
            .list(&ListQuery {
                kind: Some(Kind::Container),
                ..Default::default()
            })
            .await?;
        samples.push(t.elapsed());
        assert_eq!(l.items.len(), n);
    }
    report(&format!("list {n} objects"), samples);

    let mut samples = Vec::new();
    for i in 0..1000 {
        let o = AnyObject::new(
            Kind::Sandbox,
            "default",
            &format!("s{i}"),
            serde_json::json!({"state": "base"}),
        );
        let t = Instant::now();
        store.create(o).await?;
        samples.push(t.elapsed());
    }
    report("create one object", samples);

    let mut w = store.watch(store.revision().await?).await?;
    let mut samples = Vec::new();
    for i in 0..1000 {
        let o = AnyObject::new(
            Kind::Sandbox,
            "default",
            &format!("w{i}"),
            serde_json::json!({"state": "base"}),
        );
        let t = Instant::now();
        store.create(o).await?;
        w.next()
            .await
            .ok_or_else(|| anyhow::anyhow!("watch ended"))??;
        samples.push(t.elapsed());
    }
    report("create -> watch event", samples);
    Ok(())
}

/// A scratch directory removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(what: &str) -> std::io::Result<Self> {
        let p = std::env::temp_dir().join(format!("tend-bench-{what}-{}", std::process::id()));
        std::fs::create_dir_all(&p)?;
        Ok(Self(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        assert_eq!(sort_percentile(&mut v, 0.5), Duration::from_millis(50));
        assert_eq!(sort_percentile(&mut v, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&v, 1.0), Duration::from_millis(100));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }
}
