//! `tend bench probes`: what probing costs, and how fast a restarted daemon confirms Ready.
//!
//! On the host filesystem with the default isolation: `--tcp` containers running busybox
//! `httpd` with a `tcpSocket` readiness probe every second, then `--exec` containers running
//! `sleep` with an `exec` readiness probe (`/bin/true`) every second. The daemon's CPU is read
//! over `--seconds` with only the tcp ones probed, then with both (its own CPU, and with the
//! `tend exec-native` children exec probes spawn); probe latency p50/p99 per handler comes from
//! every probe run the daemon recorded in those windows. Then the daemon is restarted in-process
//! (the workloads keep running under their shims, as through a restart of `tend serve`) and
//! timed until a probe of the new daemon has passed for every container; the figures say how
//! many containers were seen not Ready and how many restarted meanwhile (both should be 0).

use super::daemon::{BenchDaemon, BenchOptions};
use super::{cpu_time, emit, note, Figure};
use crate::probe::{ProbeSample, ProbeTimings};
use nix::sys::resource::UsageWho;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tend_schema::kinds::container::ContainerStatus;
use tend_schema::store::{ListQuery, SqliteStore, Store};
use tend_schema::{AnyObject, ConditionStatus, Kind};

const PORT: u16 = 8080;

fn tcp_spec() -> serde_json::Value {
    serde_json::json!({
        "command": ["/bin/busybox", "httpd", "-f", "-p", format!("127.0.0.1:{PORT}"), "-h", "/tmp"],
        "stopGracePeriodSeconds": 0,
        "probes": {"readiness": {"tcpSocket": {"port": PORT}, "periodSeconds": 1}}
    })
}

fn exec_spec() -> serde_json::Value {
    serde_json::json!({
        "command": ["/bin/sleep", "3600"],
        "stopGracePeriodSeconds": 0,
        "probes": {"readiness": {"exec": {"command": ["/bin/true"]}, "periodSeconds": 1}}
    })
}

/// One Container as the bench follows it.
struct Seen {
    uid: String,
    ready: bool,
    pid: Option<u32>,
    restarts: u32,
}

/// Every Container's uid, Ready condition, pid and restart count, by name.
async fn containers(store: &SqliteStore) -> anyhow::Result<HashMap<String, Seen>> {
    let all = store
        .list(&ListQuery {
            kind: Some(Kind::Container),
            ..Default::default()
        })
        .await?;
    Ok(all
        .items
        .into_iter()
        .map(|o| {
            let st: ContainerStatus = serde_json::from_value(o.status).unwrap_or_default();
            let ready = st.common.phase.as_deref() == Some("Running")
                && st
                    .common
                    .condition("Ready")
                    .is_some_and(|c| c.status == ConditionStatus::True);
            let seen = Seen {
                uid: o.metadata.uid.clone().unwrap_or_default(),
                ready,
                pid: st.pid,
                restarts: st.restart_count,
            };
            (o.metadata.name, seen)
        })
        .collect())
}

/// Applies `n` containers named `<prefix>-<i>` and waits (up to 10 minutes) until all are Ready.
async fn apply_ready(
    store: &SqliteStore,
    prefix: &str,
    n: usize,
    spec: serde_json::Value,
) -> anyhow::Result<Duration> {
    let objs = (0..n)
        .map(|i| {
            AnyObject::new(
                Kind::Container,
                "default",
                &format!("{prefix}-{i}"),
                spec.clone(),
            )
        })
        .collect();
    let t = Instant::now();
    store.apply(objs, false).await?;
    let ok = super::until(
        Duration::from_secs(600),
        Duration::from_millis(200),
        || async {
            containers(store).await.is_ok_and(|all| {
                all.iter()
                    .filter(|(name, _)| name.starts_with(prefix))
                    .filter(|(_, s)| s.ready)
                    .count()
                    == n
            })
        },
    )
    .await;
    anyhow::ensure!(ok, "{prefix}: not every container Ready within 10 minutes");
    Ok(t.elapsed())
}

/// The daemon's CPU over `seconds` (its own, and with its waited-for children), and the
/// probe runs it recorded meanwhile.
async fn window(timings: &ProbeTimings, seconds: u64) -> (f64, f64, Vec<ProbeSample>) {
    timings.take();
    let (own0, kids0, wall0) = (
        cpu_time(UsageWho::RUSAGE_SELF),
        cpu_time(UsageWho::RUSAGE_CHILDREN),
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let wall = wall0.elapsed().as_secs_f64();
    let own = (cpu_time(UsageWho::RUSAGE_SELF) - own0).as_secs_f64();
    let kids = (cpu_time(UsageWho::RUSAGE_CHILDREN) - kids0).as_secs_f64();
    (
        own / wall * 100.0,
        (own + kids) / wall * 100.0,
        timings.take(),
    )
}

fn latency(label: &str, handler: &str, runs: &[ProbeSample]) {
    let took: Vec<Duration> = runs
        .iter()
        .filter(|r| r.handler == handler)
        .map(|r| r.took)
        .collect();
    let failed = runs
        .iter()
        .filter(|r| r.handler == handler && !r.success)
        .count();
    emit(&Figure::latency(
        format!("{handler} probe run, {label}"),
        took,
    ));
    emit(&Figure::scalar(
        format!("{handler} probes failed, {label}"),
        failed as f64,
        "runs",
    ));
}

/// Runs the benchmark on a scratch in-process daemon.
pub async fn run(exec: usize, tcp: usize, seconds: u64) -> anyhow::Result<()> {
    let timings = Arc::new(ProbeTimings::default());
    let opts = BenchOptions {
        probe_timings: Some(timings.clone()),
        ..Default::default()
    };
    let mut d = BenchDaemon::start("probes", opts).await?;
    note(format_args!(
        "tend bench probes: {tcp} tcpSocket-probed and {exec} exec-probed containers (host \
         filesystem, default isolation, probes every 1 s), CPU over {seconds} s; state dir {}, \
         instance {}",
        d.state_dir().display(),
        d.instance()
    ));
    let result = figures(&mut d, &timings, exec, tcp, seconds).await;
    let stopped = d.stop().await;
    result?;
    stopped
}

async fn figures(
    d: &mut BenchDaemon,
    timings: &ProbeTimings,
    exec: usize,
    tcp: usize,
    seconds: u64,
) -> anyhow::Result<()> {
    let took = apply_ready(&d.store, "tcp", tcp, tcp_spec()).await?;
    emit(&Figure::rate(
        "apply -> all Ready, tcpSocket-probed",
        tcp,
        took,
    ));
    let (own, _, runs) = window(timings, seconds).await;
    let label = format!("{tcp} tcp");
    emit(&Figure::scalar(
        format!("daemon CPU, {label}"),
        own,
        "% of a core",
    ));
    latency(&label, "tcpSocket", &runs);

    let took = apply_ready(&d.store, "exec", exec, exec_spec()).await?;
    emit(&Figure::rate("apply -> all Ready, exec-probed", exec, took));
    let (own, with_kids, runs2) = window(timings, seconds).await;
    let label = format!("{tcp} tcp + {exec} exec");
    emit(&Figure::scalar(
        format!("daemon CPU, {label}"),
        own,
        "% of a core",
    ));
    emit(&Figure::scalar(
        format!("daemon + exec children CPU, {label}"),
        with_kids,
        "% of a core",
    ));
    latency(&label, "tcpSocket", &runs2);
    latency(&label, "exec", &runs2);

    // Ready after a restart: every container confirmed by a probe of the new daemon.
    let before = containers(&d.store).await?;
    let n = before.len();
    timings.take();
    let t = Instant::now();
    d.restart().await?;
    let mut confirmed: HashSet<String> = HashSet::new();
    let mut seen_not_ready: HashSet<String> = HashSet::new();
    let deadline = t + Duration::from_secs(120);
    while confirmed.len() < n {
        confirmed.extend(
            timings
                .take()
                .into_iter()
                .filter(|r| r.success)
                .map(|r| r.uid),
        );
        for (name, s) in containers(&d.store).await? {
            if !s.ready {
                seen_not_ready.insert(name);
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "after the restart only {} of {n} containers were confirmed Ready in 2 minutes",
            confirmed.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    emit(&Figure::scalar(
        format!("daemon start -> all {n} probed containers confirmed Ready"),
        t.elapsed().as_secs_f64() * 1e3,
        "ms",
    ));
    let after = containers(&d.store).await?;
    let restarted = before
        .iter()
        .filter(|(name, b)| {
            after
                .get(*name)
                .is_none_or(|a| a.pid != b.pid || a.restarts != b.restarts || a.uid != b.uid)
        })
        .count();
    emit(&Figure::scalar(
        "containers seen not Ready across the restart",
        seen_not_ready.len() as f64,
        "containers",
    ));
    emit(&Figure::scalar(
        "containers restarted across the restart",
        restarted as f64,
        "containers",
    ));
    Ok(())
}
