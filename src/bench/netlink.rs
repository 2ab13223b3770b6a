//! The netlink driver alone (no controller, no store): N namespaces attached to one bridge; latency percentiles, throughput
//! and teardown time. Everything it creates carries a run tag and is removed at the end.

use std::fmt;
use std::time::{Duration, Instant};

use futures::StreamExt;
use ipnet::Ipv4Net;

use super::sort_percentile;
use crate::net::{names, AttachRequest, Error, NetDriver, Result};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Number of attachments (one namespace each).
    pub count: usize,
    /// Attachments in flight at once.
    pub concurrency: usize,
    /// Subnet for the bench bridge; must hold `count + 1` hosts and overlap no host route.
    pub subnet: Ipv4Net,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            count: 500,
            concurrency: 8,
            subnet: "10.213.0.0/16".parse().expect("valid subnet"),
        }
    }
}

/// Measured figures.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// Attachments made.
    pub count: usize,
    /// Attachments in flight at once.
    pub concurrency: usize,
    /// Namespace creation, per namespace: median.
    pub netns_p50: Duration,
    /// Namespace creation, per namespace: 99th percentile.
    pub netns_p99: Duration,
    /// `attach` (veth with peer in the namespace, address, route), per attachment: median.
    pub attach_p50: Duration,
    /// `attach`, per attachment: 99th percentile.
    pub attach_p99: Duration,
    /// Wall time to create all namespaces and attachments.
    pub setup_wall: Duration,
    /// Namespaces plus attachments per second.
    pub per_second: f64,
    /// Wall time to delete every namespace.
    pub teardown: Duration,
    /// Wall time until the kernel has removed every host veth end too.
    pub teardown_settled: Duration,
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "attachments: {} (concurrency {})",
            self.count, self.concurrency
        )?;
        writeln!(
            f,
            "netns create: p50 {:?}  p99 {:?}",
            self.netns_p50, self.netns_p99
        )?;
        writeln!(
            f,
            "attach:       p50 {:?}  p99 {:?}",
            self.attach_p50, self.attach_p99
        )?;
        writeln!(
            f,
            "setup: {:?} for all, {:.0} attachments/s",
            self.setup_wall, self.per_second
        )?;
        write!(
            f,
            "teardown: {:?} (netns deleted), {:?} (veths gone)",
            self.teardown, self.teardown_settled
        )
    }
}

/// Runs the bench on a bridge of its own and removes everything it made, also on error.
///
/// # Errors
/// `Conflict` when the subnet overlaps a host route or is too small; any driver error.
pub async fn bench_attachments(driver: &NetDriver, cfg: &BenchConfig) -> Result<BenchReport> {
    if let Some(r) = driver.route_overlap(cfg.subnet, &[]).await? {
        return Err(Error::Conflict {
            name: cfg.subnet.to_string(),
            reason: format!("overlaps host route {}", r.destination),
        });
    }
    let mut hosts = cfg.subnet.hosts();
    let gateway = hosts.next().ok_or_else(|| too_small(cfg))?;
    let addrs: Vec<_> = hosts.take(cfg.count).collect();
    if addrs.len() < cfg.count {
        return Err(too_small(cfg));
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let tag = format!("bench-{}-{nanos:x}", std::process::id());
    let bridge = names::bridge_name(&tag);
    let ns_names: Vec<String> = (0..cfg.count)
        .map(|i| format!("{}{tag}-{i}", names::NETNS_PREFIX))
        .collect();
    let res = run(driver, cfg, &bridge, gateway, &addrs, &ns_names).await;
    for ns in &ns_names {
        let _ = driver.delete_netns(ns).await;
    }
    let _ = driver.delete_bridge(&bridge).await;
    res
}

fn too_small(cfg: &BenchConfig) -> Error {
    Error::Conflict {
        name: cfg.subnet.to_string(),
        reason: format!("too small for {} attachments", cfg.count),
    }
}

async fn run(
    driver: &NetDriver,
    cfg: &BenchConfig,
    bridge: &str,
    gateway: std::net::Ipv4Addr,
    addrs: &[std::net::Ipv4Addr],
    ns_names: &[String],
) -> Result<BenchReport> {
    driver
        .ensure_bridge(
            bridge,
            gateway,
            cfg.subnet.prefix_len(),
            1500,
            Some("tend:bench:bridge"),
        )
        .await?;
    let start = Instant::now();
    let timings: Vec<Result<(Duration, Duration)>> = futures::stream::iter(0..cfg.count)
        .map(|i| async move {
            let t0 = Instant::now();
            driver.create_netns(&ns_names[i]).await?;
            let t1 = Instant::now();
            let req = AttachRequest {
                netns: ns_names[i].clone(),
                bridge: bridge.to_string(),
                host_ifname: names::host_veth_name(&ns_names[i], 0),
                ifname: names::ns_ifname(0),
                address: Ipv4Net::new(addrs[i], cfg.subnet.prefix_len()).expect("valid prefix"),
                gateway: Some(gateway),
                mtu: 1500,
                // As the daemon does: the owner's mark goes in the creating message.
                alias: Some(format!("tend:bench:{}", ns_names[i])),
            };
            driver.attach(&req).await?;
            Ok((t1 - t0, t1.elapsed()))
        })
        .buffer_unordered(cfg.concurrency.max(1))
        .collect()
        .await;
    let setup_wall = start.elapsed();
    let mut netns = Vec::with_capacity(cfg.count);
    let mut attach = Vec::with_capacity(cfg.count);
    for t in timings {
        let (n, a) = t?;
        netns.push(n);
        attach.push(a);
    }
    let start = Instant::now();
    futures::stream::iter(ns_names)
        .map(|n| driver.delete_netns(n))
        .buffer_unordered(cfg.concurrency.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<()>>()?;
    let teardown = start.elapsed();
    let veths: Vec<String> = ns_names
        .iter()
        .map(|n| names::host_veth_name(n, 0))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let links = driver.list_tend_links().await?;
        if !links.iter().any(|l| veths.contains(&l.name)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(BenchReport {
        count: cfg.count,
        concurrency: cfg.concurrency,
        netns_p50: sort_percentile(&mut netns, 0.5),
        netns_p99: sort_percentile(&mut netns, 0.99),
        attach_p50: sort_percentile(&mut attach, 0.5),
        attach_p99: sort_percentile(&mut attach, 0.99),
        setup_wall,
        per_second: cfg.count as f64 / setup_wall.as_secs_f64(),
        teardown,
        teardown_settled: start.elapsed(),
    })
}
