//! `tend bench` figures: each function measures one part of tend and prints what it saw, one
//! [`Figure`] at a time through [`emit`]: a text line, or with `--json` one JSON object per line
//! (deploy/bench-figures.sh turns those into docs/bench-latency.json and the chart). Figures are
//! recorded in docs/benchmarks.md with the command that produced them.

pub mod api;
pub mod cli;
pub mod container;
pub mod daemon;
pub mod docker;
pub mod drift;
pub mod image;
pub mod netlink;
pub mod network;
pub mod peers;
pub mod ports;
pub mod probes;
pub mod rollback;
pub mod runtime;
pub mod sandbox;
pub mod snapshots;
pub mod usage;

use futures::StreamExt;
use std::sync::{Arc, OnceLock};
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

/// CPU time (user + system) used so far by this process (`RUSAGE_SELF`) or by its children
/// it has waited for (`RUSAGE_CHILDREN`).
pub fn cpu_time(who: nix::sys::resource::UsageWho) -> Duration {
    let u = nix::sys::resource::getrusage(who).expect("getrusage");
    let tv =
        |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
    tv(u.user_time()) + tv(u.system_time())
}

/// CPU time used so far by the calling thread, to the nanosecond (`CLOCK_THREAD_CPUTIME_ID`;
/// `getrusage(RUSAGE_THREAD)` can round a short pass down to nothing).
pub fn thread_cpu_time() -> Duration {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .expect("clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32)
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

/// With `--json`, the bench whose figures this process prints; unset, figures print as text.
static JSON_BENCH: OnceLock<&'static str> = OnceLock::new();

/// From now on, this process prints each figure as one JSON object on stdout, tagged with
/// `bench`, and every other line (headers, notes) on stderr. The first call wins.
pub fn print_json(bench: &'static str) {
    let _ = JSON_BENCH.set(bench);
}

/// Whether [`print_json`] was called (a bench that starts a child passes `--json` on).
pub fn printing_json() -> bool {
    JSON_BENCH.get().is_some()
}

/// One measured figure, printed by [`emit`] as a text line or a JSON object.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// What was measured, e.g. `apply -> Running (1 container)`.
    pub name: String,
    pub value: Value,
}

/// What a [`Figure`] holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `n` samples: median, 99th percentile and slowest.
    Latency {
        n: usize,
        p50: Duration,
        p99: Duration,
        max: Duration,
    },
    /// `n` things done in `took`.
    Rate { n: usize, took: Duration },
    /// One number that is not a duration, e.g. CPU use.
    Scalar { value: f64, unit: &'static str },
    /// Not measured, and why (e.g. `podman not installed`).
    Skipped(String),
}

impl Figure {
    /// The latency figure of unsorted `samples`.
    pub fn latency(name: impl Into<String>, mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        Self {
            name: name.into(),
            value: Value::Latency {
                n: samples.len(),
                p50: percentile(&samples, 0.5),
                p99: percentile(&samples, 0.99),
                max: percentile(&samples, 1.0),
            },
        }
    }

    pub fn rate(name: impl Into<String>, n: usize, took: Duration) -> Self {
        Self {
            name: name.into(),
            value: Value::Rate { n, took },
        }
    }

    pub fn scalar(name: impl Into<String>, value: f64, unit: &'static str) -> Self {
        Self {
            name: name.into(),
            value: Value::Scalar { value, unit },
        }
    }

    pub fn skipped(name: impl Into<String>, why: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: Value::Skipped(why.into()),
        }
    }

    /// The line people read.
    pub fn text(&self) -> String {
        let name = &self.name;
        match &self.value {
            Value::Latency { n, p50, p99, max } => {
                format!("{name:<46} n={n:<6} p50={p50:>9.2?}  p99={p99:>9.2?}  max={max:>9.2?}")
            }
            Value::Rate { n, took } => format!(
                "{name:<46} n={n:<6} in {:.0} ms = {:.1}/s",
                took.as_secs_f64() * 1e3,
                per_second(*n, *took)
            ),
            Value::Scalar { value, unit } => format!("{name:<46} {value:.3} {unit}"),
            Value::Skipped(why) => format!("{name:<46} skipped: {why}"),
        }
    }

    /// The object scripts read (deploy/bench-figures.sh): times in µs or ms as the key says.
    pub fn json(&self, bench: &str) -> serde_json::Value {
        let mut o = serde_json::json!({"bench": bench, "figure": self.name});
        // Tenths of a µs or ms, thousandths of a per-second rate: no float noise in the file.
        let round = |v: f64, per: f64| (v * per).round() / per;
        let us = |d: &Duration| round(d.as_secs_f64() * 1e6, 10.0);
        let more = match &self.value {
            Value::Latency { n, p50, p99, max } => serde_json::json!({
                "n": n, "p50_us": us(p50), "p99_us": us(p99), "max_us": us(max)
            }),
            Value::Rate { n, took } => serde_json::json!({
                "n": n,
                "total_ms": round(took.as_secs_f64() * 1e3, 10.0),
                "per_second": round(per_second(*n, *took), 1000.0)
            }),
            Value::Scalar { value, unit } => serde_json::json!({"value": value, "unit": unit}),
            Value::Skipped(why) => serde_json::json!({"skipped": why}),
        };
        if let (Some(o), serde_json::Value::Object(more)) = (o.as_object_mut(), more) {
            o.extend(more);
        }
        o
    }
}

fn per_second(n: usize, took: Duration) -> f64 {
    n as f64 / took.as_secs_f64().max(1e-9)
}

/// Prints `f` as text, or as one JSON line after [`print_json`].
pub fn emit(f: &Figure) {
    match JSON_BENCH.get() {
        Some(bench) => println!("{}", f.json(bench)),
        None => println!("{}", f.text()),
    }
}

/// Prints a line that is not a figure (a header, a note): on stdout as text, on stderr with
/// `--json` so stdout holds only figures.
pub fn note(line: impl std::fmt::Display) {
    match JSON_BENCH.get() {
        Some(_) => eprintln!("{line}"),
        None => println!("{line}"),
    }
}

/// Prints the latency figure of `samples`.
pub fn report(name: &str, samples: Vec<Duration>) {
    emit(&Figure::latency(name, samples));
}

/// `tend bench store`: point get, list, bulk apply, create latency, watch delivery.
pub async fn store(n: usize) -> anyhow::Result<()> {
    let tmp = TempDir::new("store")?;
    let dir = tmp.0.clone();
    let store = Arc::new(SqliteStore::open(dir.join("tend.db"), OpenOptions::default()).await?);
    note(format_args!(
        "tend bench store: {n} objects, database in {}",
        dir.display()
    ));

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
    emit(&Figure::rate(
        "apply one file (decode + apply)",
        n,
        t.elapsed(),
    ));
    emit(&Figure::rate("decode one file", n, decoded));

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

    #[test]
    fn a_latency_figure_prints_microseconds_in_json() {
        let ms = |m| Duration::from_micros(m);
        let f = Figure::latency("apply", vec![ms(3000), ms(1000), ms(2000)]);
        assert_eq!(
            f.json("container"),
            serde_json::json!({"bench": "container", "figure": "apply", "n": 3,
                "p50_us": 2000.0, "p99_us": 3000.0, "max_us": 3000.0})
        );
        assert!(f.text().contains("p50=   2.00ms"), "{}", f.text());
    }

    #[test]
    fn rates_and_skips_say_what_they_are() {
        let f = Figure::rate("apply of many", 100, Duration::from_millis(500));
        assert_eq!(f.json("c")["per_second"], 200.0);
        assert_eq!(f.json("c")["total_ms"], 500.0);
        let f = Figure::rate("r", 20, Duration::from_micros(157_376_800));
        assert_eq!(f.json("c")["total_ms"], 157376.8);
        assert_eq!(f.json("c")["per_second"], 0.127);
        let f = Figure::skipped("podman run -d (crun)", "podman not installed");
        assert_eq!(f.json("c")["skipped"], "podman not installed");
        assert!(f.text().ends_with("skipped: podman not installed"));
    }
}
