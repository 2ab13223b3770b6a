//! `tend bench network` through the controller: attachments made by the attachment component
//! (leases in SQLite, names, aliases), veth deletions repaired by the running Network controller,
//! and teardown — in a throwaway state dir with its own instance id.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use tend_controllers::Context;
use tend_schema::store::{DeleteOptions, SqliteStore, Store};
use tend_schema::{AnyObject, Kind};

use super::daemon::{BenchDaemon, BenchOptions};
use super::sort_percentile;
use crate::net::{names, NetDriver};

/// What to measure.
#[derive(Debug, Clone)]
pub struct NetworkBenchConfig {
    /// Containers attached at `concurrency` for the throughput figure (one namespace each).
    pub count: usize,
    /// Containers attached one at a time before that, for the latency figures.
    pub latency: usize,
    /// Attachments in flight at once.
    pub concurrency: usize,
    /// How many veth deletions to time the repair of.
    pub repairs: usize,
    /// The Network's subnet; must hold `count + 1` hosts and overlap no host route.
    pub subnet: String,
}

impl Default for NetworkBenchConfig {
    fn default() -> Self {
        Self {
            count: 500,
            latency: 100,
            concurrency: 8,
            repairs: 50,
            subnet: "10.214.0.0/16".into(),
        }
    }
}

/// Measured figures.
#[derive(Debug, Clone)]
pub struct NetworkBenchReport {
    pub count: usize,
    pub latency_count: usize,
    pub concurrency: usize,
    /// `ensure_attachments` of one container at a time (lease, netns, veth, address, route).
    pub attach_p50: Duration,
    pub attach_p99: Duration,
    /// The same with `concurrency` in flight: each also waits for the others' netlink work.
    pub loaded_p50: Duration,
    pub loaded_p99: Duration,
    /// Containers attached per second with `concurrency` in flight.
    pub per_second: f64,
    /// From deleting a container's host veth to the controller having put it back.
    pub repair_p50: Duration,
    pub repair_p99: Duration,
    /// `remove_attachments` of every container (namespaces deleted, leases released).
    pub teardown: Duration,
}

impl fmt::Display for NetworkBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "containers attached: {} one at a time, then {} at concurrency {}",
            self.latency_count, self.count, self.concurrency
        )?;
        writeln!(
            f,
            "attach, one at a time: p50 {:?}  p99 {:?}",
            self.attach_p50, self.attach_p99
        )?;
        writeln!(
            f,
            "attach, concurrency {}: p50 {:?}  p99 {:?}  ({:.0}/s)",
            self.concurrency, self.loaded_p50, self.loaded_p99, self.per_second
        )?;
        writeln!(
            f,
            "veth deleted -> repaired: p50 {:?}  p99 {:?}",
            self.repair_p50, self.repair_p99
        )?;
        write!(f, "teardown of {}: {:?}", self.count, self.teardown)
    }
}

/// Runs the benchmark in a temporary state dir and removes everything it made.
///
/// # Errors
/// Store, driver or daemon failures, or the Network never becoming Ready (e.g. the subnet
/// overlaps a host route).
pub async fn bench_network_controller(
    cfg: &NetworkBenchConfig,
) -> anyhow::Result<NetworkBenchReport> {
    let d = BenchDaemon::start("net", BenchOptions::default()).await?;
    let res = run(cfg, &d.store, &d.ctx, &d.attacher).await;
    let stopped = d.stop().await;
    let r = res?;
    stopped?;
    Ok(r)
}

async fn run(
    cfg: &NetworkBenchConfig,
    store: &Arc<SqliteStore>,
    ctx: &Context,
    attacher: &Arc<tend_controllers::network::Attacher>,
) -> anyhow::Result<NetworkBenchReport> {
    let spec = json!({"subnet": cfg.subnet});
    let net = store
        .create(AnyObject::new(Kind::Network, "default", "bench", spec))
        .await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let o = store.get(&net.key()?).await?;
        if o.status["phase"] == "Ready" {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "network never Ready: {}",
            o.status
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut containers = Vec::with_capacity(cfg.latency + cfg.count);
    for i in 0..cfg.latency + cfg.count {
        let spec = json!({"command": ["/bin/true"], "networks": [{"name": "bench"}]});
        let c = AnyObject::new(Kind::Container, "default", &format!("c{i}"), spec);
        containers.push(store.create(c).await?);
    }
    let (single, loaded) = containers.split_at(cfg.latency);
    let mut attach = Vec::with_capacity(single.len());
    for c in single {
        attach.push(attach_one(attacher, ctx, c).await?);
    }
    let start = Instant::now();
    let timings: Vec<anyhow::Result<Duration>> = futures::stream::iter(loaded)
        .map(|c| attach_one(attacher, ctx, c))
        .buffer_unordered(cfg.concurrency.max(1))
        .collect()
        .await;
    let wall = start.elapsed();
    let mut under_load = timings.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    let mut repairs = Vec::new();
    let driver = NetDriver::with_default_dir()?;
    for c in containers.iter().take(cfg.repairs) {
        let uid = c.metadata.uid.as_deref().unwrap_or_default();
        let veth = names::host_veth_name(uid, 0);
        let netns = attacher.netns_name(uid);
        driver.delete_link(&veth).await?;
        let t = Instant::now();
        // Repaired: the host end is back on the bridge and up, and inside the namespace eth0
        // is up with the container's address again.
        while !attachment_whole(&driver, &netns, &veth).await? {
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(10),
                "{veth} never repaired"
            );
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        repairs.push(t.elapsed());
    }
    let start = Instant::now();
    let removed: Vec<_> = futures::stream::iter(&containers)
        .map(|c| attacher.remove_attachments(ctx, c))
        .buffer_unordered(cfg.concurrency.max(1))
        .collect()
        .await;
    let teardown = start.elapsed();
    for r in removed {
        r?;
    }
    for c in &containers {
        store.delete(&c.key()?, &DeleteOptions::default()).await?;
    }
    Ok(NetworkBenchReport {
        count: cfg.count,
        latency_count: cfg.latency,
        concurrency: cfg.concurrency,
        attach_p50: sort_percentile(&mut attach, 0.5),
        attach_p99: sort_percentile(&mut attach, 0.99),
        loaded_p50: sort_percentile(&mut under_load, 0.5),
        loaded_p99: sort_percentile(&mut under_load, 0.99),
        per_second: cfg.count as f64 / wall.as_secs_f64(),
        repair_p50: sort_percentile(&mut repairs, 0.5),
        repair_p99: sort_percentile(&mut repairs, 0.99),
        teardown,
    })
}

async fn attach_one(
    attacher: &tend_controllers::network::Attacher,
    ctx: &Context,
    c: &AnyObject,
) -> anyhow::Result<Duration> {
    let t = Instant::now();
    attacher.ensure_attachments(ctx, c).await?;
    Ok(t.elapsed())
}

async fn attachment_whole(driver: &NetDriver, netns: &str, veth: &str) -> anyhow::Result<bool> {
    let host = driver.link_by_name(veth).await?;
    if !host.is_some_and(|l| crate::net::link_master(&l).is_some() && crate::net::link_up(&l)) {
        return Ok(false);
    }
    let st = driver.inspect_attachment(netns, veth, "eth0").await?;
    Ok(st.peer_up && st.addresses.len() == 1)
}
