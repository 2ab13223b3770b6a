//! `tend bench usage`: what sampling usage costs. `--containers` sleeping native containers
//! (host filesystem, limits), then `--passes` sampling passes over their cgroups exactly as the
//! daemon makes them every `--usage-interval` (default 10 s): time and CPU per pass, and the
//! share of one core that makes at the default interval.

use super::daemon::{BenchDaemon, BenchOptions};
use super::{emit, note, thread_cpu_time, Figure};
use crate::runtime_native::usage::{UsageSampler, DEFAULT_INTERVAL};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tend_schema::store::{ListQuery, Store};
use tend_schema::{AnyObject, Kind};

pub async fn run(containers: usize, passes: usize) -> anyhow::Result<()> {
    let d = BenchDaemon::start("usage", BenchOptions::default()).await?;
    note(format_args!(
        "tend bench usage: {containers} containers, {passes} sampling passes; state dir {}, instance {}",
        d.state_dir().display(),
        d.instance()
    ));
    let result = figures(&d, containers, passes).await;
    let stopped = d.stop().await;
    result?;
    stopped
}

async fn figures(d: &BenchDaemon, containers: usize, passes: usize) -> anyhow::Result<()> {
    let spec = serde_json::json!({
        "command": ["/bin/sleep", "3600"],
        "resources": {"memory": "32Mi", "cpu": "100m", "pids": 16},
        "stopGracePeriodSeconds": 0
    });
    let objs = (0..containers)
        .map(|i| AnyObject::new(Kind::Container, "default", &format!("u-{i}"), spec.clone()))
        .collect();
    d.store.apply(objs, false).await?;
    let running = super::until(
        Duration::from_secs(600),
        Duration::from_millis(200),
        || async {
            d.store
                .list(&ListQuery {
                    kind: Some(Kind::Container),
                    ..Default::default()
                })
                .await
                .is_ok_and(|l| {
                    l.items
                        .iter()
                        .filter(|o| o.status["phase"] == "Running")
                        .count()
                        == containers
                })
        },
    )
    .await;
    anyhow::ensure!(running, "not every container Running within 10 minutes");

    let cgroups = Arc::new(crate::cgroup::detect(std::path::Path::new(
        "/sys/fs/cgroup",
    ))?);
    let sampler = Arc::new(UsageSampler::new(cgroups, d.instance()));
    let (wall, cpu, seen) = tokio::task::spawn_blocking(move || {
        let (mut wall, mut cpu, mut seen) = (vec![], vec![], 0);
        for _ in 0..passes {
            let (t, c) = (Instant::now(), thread_cpu_time());
            seen = sampler.sample();
            wall.push(t.elapsed());
            cpu.push(thread_cpu_time() - c);
        }
        (wall, cpu, seen)
    })
    .await?;
    anyhow::ensure!(
        seen == containers,
        "a pass sampled {seen} groups, not {containers}"
    );
    let mean_cpu = cpu.iter().sum::<Duration>() / cpu.len().max(1) as u32;
    emit(&Figure::latency(
        format!("sampling pass, {containers} containers (wall)"),
        wall,
    ));
    emit(&Figure::latency(
        format!("sampling pass, {containers} containers (CPU)"),
        cpu,
    ));
    emit(&Figure::scalar(
        format!(
            "sampling CPU at the default {} s interval, {containers} containers",
            DEFAULT_INTERVAL.as_secs()
        ),
        mean_cpu.as_secs_f64() / DEFAULT_INTERVAL.as_secs_f64() * 100.0,
        "% of a core",
    ));
    Ok(())
}
