//! `tend bench network` through the controller: attachments made by the attachment component
//! (leases in SQLite, names, aliases), veth deletions repaired by the running Network controller,
//! and teardown — in a throwaway state dir with its own instance id.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use tend_controllers::Context;
use tend_schema::store::{DeleteOptions, SqliteStore, Store};
use tend_schema::{AnyObject, Kind};

use super::daemon::{BenchDaemon, BenchOptions};
use super::Figure;
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

/// Runs the benchmark in a temporary state dir and removes everything it made; returns its
/// figures: attachment latency one at a time and at `concurrency`, the throughput, veth
/// deleted → repaired, and the teardown of all.
///
/// # Errors
/// Store, driver or daemon failures, or the Network never becoming Ready (e.g. the subnet
/// overlaps a host route).
pub async fn bench_network_controller(cfg: &NetworkBenchConfig) -> anyhow::Result<Vec<Figure>> {
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
) -> anyhow::Result<Vec<Figure>> {
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
    let under_load = timings.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
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
    let c = cfg.concurrency;
    Ok(vec![
        Figure::latency("attachment, one at a time", attach),
        Figure::latency(format!("attachment, concurrency {c}"), under_load),
        Figure::rate(format!("attachments at concurrency {c}"), cfg.count, wall),
        Figure::latency("veth deleted -> repaired", repairs),
        Figure::rate("teardown of all attachments", containers.len(), teardown),
    ])
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

/// Whether a container's attachment is whole: host end `veth` on its bridge and up, and `eth0`
/// in `netns` up with one address. The drift bench counts a veth repair by the same test.
pub(super) async fn attachment_whole(
    driver: &NetDriver,
    netns: &str,
    veth: &str,
) -> anyhow::Result<bool> {
    let host = driver.link_by_name(veth).await?;
    if !host.is_some_and(|l| crate::net::link_master(&l).is_some() && crate::net::link_up(&l)) {
        return Ok(false);
    }
    let st = driver.inspect_attachment(netns, veth, "eth0").await?;
    Ok(st.peer_up && st.addresses.len() == 1)
}
