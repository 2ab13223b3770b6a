//! `tend bench` figures: each function measures one part of tend and prints what it saw.
//! Figures are recorded in docs/benchmarks.md with the command that produced them.

pub mod drift;
pub mod runtime;

use futures::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tend_schema::store::{ListQuery, OpenOptions, SqliteStore, Store};
use tend_schema::{AnyObject, Kind, ObjectKey};

/// Percentile of sorted durations, in microseconds.
pub fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
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
