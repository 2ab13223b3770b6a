//! `tend bench runtime`: the controller machinery with a no-op reconciler.

use super::{emit, note, report, Figure, TempDir};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tend_controllers::{
    Action, Context, ControllerConfig, Error, Reconciler, Runtime, RuntimeConfig,
};
use tend_schema::store::{OpenOptions, SqliteStore, Store};
use tend_schema::{AnyObject, Kind, ObjectKey};

/// Reads its row (as every reconciler does) and records when each key started.
#[derive(Default)]
struct NoOp {
    count: AtomicUsize,
    started: Mutex<HashMap<ObjectKey, Instant>>,
}

#[async_trait]
impl Reconciler for NoOp {
    fn kind(&self) -> Kind {
        Kind::Sandbox
    }

    async fn reconcile(&self, ctx: &Context, key: &ObjectKey) -> Result<Action, Error> {
        let now = Instant::now();
        self.started
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.clone())
            .or_insert(now);
        ctx.get(key).await?;
        self.count.fetch_add(1, Ordering::Relaxed);
        Ok(Action::await_change())
    }
}

pub async fn run(n: usize, idle_seconds: u64) -> anyhow::Result<()> {
    let dir = TempDir::new("runtime")?;
    let store = Arc::new(SqliteStore::open(dir.0.join("tend.db"), OpenOptions::default()).await?);
    let objs: Vec<AnyObject> = (0..n)
        .map(|i| {
            AnyObject::new(
                Kind::Sandbox,
                "default",
                &format!("s{i}"),
                serde_json::json!({"state": "base"}),
            )
        })
        .collect();
    store.apply(objs, false).await?;
    note(format_args!(
        "tend bench runtime: {n} objects, no-op reconciler (reads its row), concurrency 8"
    ));

    let noop = Arc::new(NoOp::default());
    let mut rt = Runtime::new(store.clone(), RuntimeConfig::default());
    rt.register(
        noop.clone(),
        ControllerConfig {
            concurrency: 8,
            resync: Duration::from_secs(60),
        },
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let t0 = Instant::now();
    let task = tokio::spawn(rt.run(async {
        let _ = stop_rx.await;
    }));
    while noop.count.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    emit(&Figure::rate(
        "initial reconcile of all objects (with the start-up list)",
        n,
        t0.elapsed(),
    ));

    let mut samples = Vec::new();
    for i in 0..1000 {
        let key = ObjectKey::new(Kind::Sandbox, "default", format!("lat{i}"));
        let t = Instant::now();
        store
            .create(AnyObject::new(
                Kind::Sandbox,
                "default",
                &key.name,
                serde_json::json!({"state": "base"}),
            ))
            .await?;
        loop {
            if let Some(s) = noop
                .started
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&key)
            {
                samples.push(s.duration_since(t));
                break;
            }
            tokio::task::yield_now().await;
        }
    }
    report("store write -> reconcile start", samples);

    tokio::time::sleep(Duration::from_millis(500)).await;
    let (cpu0, wall0) = (
        super::cpu_time(nix::sys::resource::UsageWho::RUSAGE_SELF),
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs(idle_seconds)).await;
    let (cpu, wall) = (
        super::cpu_time(nix::sys::resource::UsageWho::RUSAGE_SELF) - cpu0,
        wall0.elapsed(),
    );
    emit(&Figure::scalar(
        format!(
            "idle CPU, {} objects, {:.0} s (resync 60 s)",
            n + 1000,
            wall.as_secs_f64()
        ),
        cpu.as_secs_f64() / wall.as_secs_f64() * 100.0,
        "% of one core",
    ));
    let _ = stop_tx.send(());
    task.await??;
    Ok(())
}
