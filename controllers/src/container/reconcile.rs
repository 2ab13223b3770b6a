//! The Container reconciler: rootfs, attachments, start, exit watch, restart, replace, delete.

use super::driver::{
    Attach, Attachments, ContainerRuntime, Exit, Observed, Running, Runtimes, WorkloadSpec,
};
use super::faults::{drv, fault_of, store_err};
use super::rootfs::{self, RootfsState};
use super::status::{self, restart_delay, should_restart};
use super::ContainerError;
use crate::action::{Action, Error};
use crate::context::Context;
use crate::controller::Reconciler;
use crate::finalizer::{finalizer, Cleanup, Event};
use crate::runtime::Trigger;
use async_trait::async_trait;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tend_schema::kinds::container::{ContainerSpec, ContainerStatus};
use tend_schema::store::EventType;
use tend_schema::{AnyObject, Kind, Object, ObjectKey};

/// The finalizer this controller puts on every Container.
pub const FINALIZER: &str = "tend.dev/container";

pub(crate) type Container = Object<ContainerSpec, ContainerStatus>;

/// Restart backoff settings.
#[derive(Debug, Clone)]
pub struct ContainerConfig {
    /// Wait before the second restart of a crash loop (the first is immediate); doubles after.
    pub backoff_base: Duration,
    /// Longest wait between restarts.
    pub backoff_max: Duration,
    /// A run that lasted this long ends the crash loop: the next restart is immediate again.
    pub backoff_reset: Duration,
}

impl Default for ContainerConfig {
    fn default() -> Self {
        Self {
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            backoff_reset: Duration::from_secs(10),
        }
    }
}

/// Runs of one container in a row that ended before the reset window. Kept in memory: after a
/// daemon restart a crash loop starts again from an immediate restart (never a missed one).
#[derive(Debug, Default, Clone)]
struct CrashLoop {
    crashes: u32,
    /// The exit last counted, so a reconcile repeated on the same exit does not count it twice.
    counted: Option<(i64, Option<tend_schema::Time>)>,
}

/// The Container controller.
pub struct ContainerReconciler {
    runtimes: Runtimes,
    attachments: Arc<dyn Attachments>,
    cfg: ContainerConfig,
    /// Wakes a key when its workload exits (absent in unit tests without a runtime).
    trigger: Option<Trigger>,
    /// uid → (pid, start time) of the workload an exit watcher waits on.
    watched: Arc<Mutex<HashMap<String, (u32, u64)>>>,
    loops: Mutex<HashMap<String, CrashLoop>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ContainerReconciler {
    /// A controller running native containers through `native`; `docker` serves
    /// `spec.runtime: docker` when present. `trigger` (from `Runtime::register_with`) is how
    /// exit watchers wake a key.
    pub fn new(
        native: Arc<dyn ContainerRuntime>,
        docker: Option<Arc<dyn ContainerRuntime>>,
        attachments: Arc<dyn Attachments>,
        cfg: ContainerConfig,
        trigger: Option<Trigger>,
    ) -> Self {
        Self {
            runtimes: Runtimes { native, docker },
            attachments,
            cfg,
            trigger,
            watched: Arc::default(),
            loops: Mutex::default(),
        }
    }

    fn runtimes(&self) -> Vec<&Arc<dyn ContainerRuntime>> {
        self.runtimes.all()
    }

    /// Starts an exit watcher for `r` unless one already waits on that very process.
    fn watch(&self, rt: &Arc<dyn ContainerRuntime>, uid: &str, r: &Running) {
        let id = (r.pid, r.start_time);
        if lock(&self.watched).get(uid) == Some(&id) {
            return;
        }
        let Some(exited) = rt.exited(uid, r) else {
            if let Some(t) = &self.trigger {
                t.uid(uid);
            }
            return;
        };
        lock(&self.watched).insert(uid.to_string(), id);
        let (watched, trigger, uid) = (self.watched.clone(), self.trigger.clone(), uid.to_string());
        tokio::spawn(async move {
            exited.await;
            {
                let mut w = lock(&watched);
                if w.get(&uid) == Some(&id) {
                    w.remove(&uid);
                }
            }
            if let Some(t) = trigger {
                t.uid(&uid);
            }
        });
    }

    /// Counts `e` into the crash loop of `uid` (once) and returns the crashes in a row.
    fn count_crash(&self, uid: &str, e: &Exit) -> u32 {
        let mut loops = lock(&self.loops);
        let l = loops.entry(uid.to_string()).or_default();
        let id = (e.generation, e.finished_at);
        if l.counted != Some(id) {
            l.counted = Some(id);
            let long_run = e.ran_for().is_some_and(|d| d >= self.cfg.backoff_reset);
            l.crashes = if long_run { 1 } else { l.crashes + 1 };
        }
        l.crashes
    }

    async fn apply(&self, ctx: &Context, obj: AnyObject) -> Result<Action, Error> {
        let key = obj.key()?;
        let c: Container = obj.typed().map_err(|source| ContainerError::Decode {
            key: key.clone(),
            source,
        })?;
        let (uid, generation) = (
            c.metadata.uid.clone().unwrap_or_default(),
            c.metadata.generation,
        );
        let mut st = c.status.clone();
        let Some(rt) = self.runtimes.serving(&c.spec).cloned() else {
            status::pending(
                &mut st,
                generation,
                "RuntimeUnavailable",
                "this daemon has no docker runtime",
            );
            ctx.write_status(&obj, &st)
                .await
                .map_err(store_err(&key, "write status"))?;
            return Ok(Action::await_change());
        };
        // A runtime switch leaves the old runtime's workload behind: stop it first.
        // An unreachable other runtime is skipped (its leftover goes on a later reconcile):
        // dockerd being down must not stall native containers.
        for other in self.runtimes().into_iter().filter(|o| !Arc::ptr_eq(o, &rt)) {
            let seen = match other.inspect(&uid).await {
                Err(e) if e.is_unavailable() => continue,
                r => r.map_err(drv(&uid, other.name(), "inspect"))?,
            };
            if seen != Observed::Absent {
                other
                    .stop(&uid, grace(&c.spec))
                    .await
                    .map_err(drv(&uid, other.name(), "stop"))?;
                other
                    .remove(&uid)
                    .await
                    .map_err(drv(&uid, other.name(), "remove"))?;
            }
        }
        let observed = rt
            .inspect(&uid)
            .await
            .map_err(drv(&uid, rt.name(), "inspect"))?;
        let mut restarts = 0;
        match observed {
            Observed::Running(r) if r.generation == generation => {
                self.watch(&rt, &uid, &r);
                let networks = match self.attach(&c, &uid).await? {
                    Attach::Ready { networks, .. } => networks,
                    Attach::Waiting { .. } => st.networks.clone(),
                };
                let w = self.workload(&c, None, None);
                let repairs = rt
                    .repair(&w, &r)
                    .await
                    .map_err(drv(&uid, rt.name(), "repair"))?;
                if !repairs.is_empty() {
                    ctx.drift_repaired();
                    ctx.event(
                        &obj,
                        EventType::Warning,
                        "DriftRepaired",
                        repairs.join("; "),
                    )
                    .await;
                }
                status::running(&mut st, generation, &r, networks, rt.name());
                st.container_id = rt.container_id(&uid);
                ctx.write_status(&obj, &st)
                    .await
                    .map_err(store_err(&key, "write status"))?;
                return Ok(Action::await_change());
            }
            Observed::Running(r) => {
                ctx.event(
                    &obj,
                    EventType::Normal,
                    "Replacing",
                    format!(
                        "spec changed (generation {} → {generation}); stopping pid {}",
                        r.generation, r.pid
                    ),
                )
                .await;
                if let Some(e) =
                    rt.stop(&uid, grace(&c.spec))
                        .await
                        .map_err(drv(&uid, rt.name(), "stop"))?
                {
                    st.last_state = Some(status::last_state(&e));
                }
                lock(&self.loops).remove(&uid);
            }
            Observed::Exiting { .. } => return Ok(Action::requeue(Duration::from_millis(20))),
            Observed::Exited(e) if e.generation != generation => {
                st.last_state = Some(status::last_state(&e));
                lock(&self.loops).remove(&uid);
            }
            Observed::Lost { generation: g } if g != generation => {}
            o @ (Observed::Exited(_) | Observed::Lost { .. }) => {
                let e = observed_exit(o, generation);
                if !should_restart(c.spec.restart_policy, &e) {
                    status::finished(&mut st, generation, &e);
                    ctx.write_status(&obj, &st)
                        .await
                        .map_err(store_err(&key, "write status"))?;
                    return Ok(Action::await_change());
                }
                let crashes = self.count_crash(&uid, &e);
                let wait = restart_delay(crashes, self.cfg.backoff_base, self.cfg.backoff_max);
                let since = e
                    .finished_at
                    .and_then(|f| (chrono::Utc::now() - f).to_std().ok())
                    .unwrap_or(Duration::MAX);
                if since < wait {
                    status::backing_off(&mut st, generation, &e, wait);
                    ctx.write_status(&obj, &st)
                        .await
                        .map_err(store_err(&key, "write status"))?;
                    return Ok(Action::requeue(wait - since));
                }
                st.last_state = Some(status::last_state(&e));
                restarts = 1;
            }
            Observed::Absent => {}
        }
        // Start (first run, restart, or replacement).
        let rootfs = match rootfs::resolve(ctx, &c).await? {
            RootfsState::Ready(p) => p,
            RootfsState::Waiting(msg) => {
                status::pending(&mut st, generation, "WaitingForSandbox", &msg);
                ctx.write_status(&obj, &st)
                    .await
                    .map_err(store_err(&key, "write status"))?;
                return Ok(Action::await_change());
            }
        };
        let (netns, networks) = match self.attach(&c, &uid).await? {
            Attach::Ready { netns, networks } => (netns, networks),
            Attach::Waiting { reason, message } => {
                status::pending(&mut st, generation, &reason, &message);
                ctx.write_status(&obj, &st)
                    .await
                    .map_err(store_err(&key, "write status"))?;
                return Ok(Action::await_change());
            }
        };
        let w = self.workload(&c, rootfs, netns);
        let r = match rt.start(&w).await {
            Ok(r) => r,
            Err(e) => {
                if !e.is_fault() {
                    status::pending(&mut st, generation, "StartFailed", &e.to_string());
                    let _ = ctx.write_status(&obj, &st).await;
                    // Deduplicated by the store: a start that keeps failing is one event with a count.
                    ctx.event(&obj, EventType::Warning, "StartFailed", e.to_string())
                        .await;
                }
                return Err(drv(&uid, rt.name(), "start")(e).into());
            }
        };
        self.watch(&rt, &uid, &r);
        st.restart_count += restarts;
        status::running(&mut st, generation, &r, networks, rt.name());
        st.container_id = rt.container_id(&uid);
        ctx.write_status(&obj, &st)
            .await
            .map_err(store_err(&key, "write status"))?;
        Ok(Action::await_change())
    }

    async fn attach(&self, c: &Container, uid: &str) -> Result<Attach, Error> {
        Ok(self
            .attachments
            .ensure(c.metadata.ns(), uid, &c.spec)
            .await
            .map_err(drv(uid, "attachments", "ensure"))?)
    }

    fn workload(
        &self,
        c: &Container,
        rootfs: Option<PathBuf>,
        netns: Option<PathBuf>,
    ) -> WorkloadSpec {
        WorkloadSpec {
            uid: c.metadata.uid.clone().unwrap_or_default(),
            name: format!("{}/{}", c.metadata.ns(), c.metadata.name),
            generation: c.metadata.generation,
            spec: c.spec.clone(),
            rootfs,
            netns,
        }
    }

    async fn cleanup(&self, ctx: &Context, obj: AnyObject) -> Result<Cleanup, Error> {
        let key = obj.key()?;
        let c: Container = obj.typed().map_err(|source| ContainerError::Decode {
            key: key.clone(),
            source,
        })?;
        let uid = c.metadata.uid.clone().unwrap_or_default();
        let mut st = c.status.clone();
        status::terminating(&mut st, c.metadata.generation);
        ctx.write_status(&obj, &st)
            .await
            .map_err(store_err(&key, "write status"))?;
        let mine = self.runtimes.serving(&c.spec).cloned();
        for rt in self.runtimes() {
            let result = match rt.stop(&uid, grace(&c.spec)).await {
                Ok(_) => rt.remove(&uid).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => {}
                // Another runtime being down must not hold up this delete: its start-up
                // orphan sweep removes anything it still has for this uid.
                Err(e)
                    if e.is_unavailable() && !mine.as_ref().is_some_and(|m| Arc::ptr_eq(m, rt)) =>
                {
                    tracing::warn!(runtime = rt.name(), %uid, error = %e, "skipping an unreachable runtime on delete");
                }
                Err(e) => return Err(drv(&uid, rt.name(), "remove")(e).into()),
            }
        }
        self.attachments
            .remove(&uid)
            .await
            .map_err(drv(&uid, "attachments", "remove"))?;
        lock(&self.loops).remove(&uid);
        lock(&self.watched).remove(&uid);
        Ok(Cleanup::Done)
    }
}

fn grace(spec: &ContainerSpec) -> Duration {
    Duration::from_secs(u64::from(spec.grace_period_seconds()))
}

/// The exit of an ended workload; a lost one counts as an error with unknown status.
fn observed_exit(o: Observed, generation: i64) -> Exit {
    match o {
        Observed::Exited(e) => e,
        _ => Exit {
            generation,
            exit_code: None,
            signal: None,
            oom_killed: false,
            started_at: None,
            finished_at: None,
            error: Some("the exit status was lost (its supervisor was killed)".into()),
        },
    }
}

#[async_trait]
impl Reconciler for ContainerReconciler {
    fn kind(&self) -> Kind {
        Kind::Container
    }

    /// Removes the host objects of uids no Container owns (orphans of this instance).
    async fn observe(&self, ctx: &Context) -> Result<(), Error> {
        for rt in self.runtimes() {
            let owned = match rt.list_owned().await {
                // A runtime that is down must not hold up the others: its sweep is skipped.
                Err(e) if e.is_unavailable() => {
                    tracing::warn!(runtime = rt.name(), error = %e, "runtime unavailable at start-up: orphan sweep skipped");
                    continue;
                }
                r => r.map_err(drv("*", rt.name(), "list"))?,
            };
            for uid in owned {
                let owned = ctx
                    .index
                    .key_of_uid(&uid)
                    .is_some_and(|k| k.kind == Kind::Container);
                if owned {
                    continue;
                }
                tracing::warn!(runtime = rt.name(), %uid, "removing an orphan container no object owns");
                rt.stop(&uid, Duration::ZERO)
                    .await
                    .map_err(drv(&uid, rt.name(), "stop"))?;
                rt.remove(&uid)
                    .await
                    .map_err(drv(&uid, rt.name(), "remove"))?;
                self.attachments
                    .remove(&uid)
                    .await
                    .map_err(drv(&uid, "attachments", "remove"))?;
            }
        }
        Ok(())
    }

    async fn reconcile(&self, ctx: &Context, key: &ObjectKey) -> Result<Action, Error> {
        finalizer(ctx, FINALIZER, key, |event| async move {
            match event {
                Event::Apply(obj) => match self.apply(ctx, obj.clone()).await {
                    Err(e) => match fault_of(&e) {
                        Some(f) => self.report_fault(ctx, &obj, f).await.map(Into::into),
                        None => Err(e),
                    },
                    ok => ok.map(Into::into),
                },
                Event::Cleanup(obj) => self.cleanup(ctx, obj).await.map(Into::into),
            }
        })
        .await
    }
}
