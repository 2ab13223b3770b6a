//! The Container reconciler: observe (the runtime's view of the workload) → decide
//! ([`super::decide`]) → act (keep and repair, start, replace, back off, finish); and delete.

use super::decide::{decide, exit_of, Decision, Facts};
use super::depends;
use super::driver::{
    Attach, Attachments, ContainerRuntime, Exit, Observed, Running, Runtimes, WorkloadSpec,
};
use super::faults::{drv, fault_of, store_err};
use super::probe::{Health, ProbeRunner, ProbeTarget};
use super::prober::{Prober, RunId, Seed};
use super::rollout::Plan;
use super::rootfs::{self, RootfsState};
use super::status;
use super::ContainerError;
use crate::action::{Action, Error};
use crate::context::Context;
use crate::controller::Reconciler;
use crate::finalizer::{finalizer, Cleanup, Event};
use crate::image::DefaultsError;
use crate::runtime::Trigger;
use crate::snapshot::{SnapshotDriver, TreeClass};
use async_trait::async_trait;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tend_schema::kinds::container::{
    ContainerSpec, ContainerStatus, CrashLoopStatus, UserNamespaceStatus,
};
use tend_schema::store::{EventType, IdPool, IdRangeError, StoreError};
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
    /// Where the host id ranges of `securityContext.userNamespace` come from.
    pub id_pool: IdPool,
}

impl Default for ContainerConfig {
    fn default() -> Self {
        Self {
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            backoff_reset: Duration::from_secs(10),
            id_pool: IdPool::default(),
        }
    }
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
    /// The probe workers of running workloads.
    pub(super) prober: Prober,
    /// Snapshots and restores of the Container's Sandbox for rollouts (absent: `snapshotData`
    /// rollouts fail with a clear error).
    pub(super) snapshots: Option<Arc<dyn SnapshotDriver>>,
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
            watched: Arc::default(),
            prober: Prober::new(None, trigger.clone()),
            snapshots: None,
            trigger,
        }
    }

    /// Takes and restores rollout data snapshots through `driver`.
    pub fn with_snapshots(mut self, driver: Arc<dyn SnapshotDriver>) -> Self {
        self.snapshots = Some(driver);
        self
    }

    /// Runs the declared probes through `runner`. Without one, a Container that declares
    /// probes never becomes Started/Ready (the daemon cannot tell).
    pub fn with_probes(mut self, runner: Arc<dyn ProbeRunner>) -> Self {
        self.prober = Prober::new(Some(runner), self.trigger.clone());
        self
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

    /// Counts `e` into the crash loop recorded in `st` (once per exit) and returns the loop
    /// as it now stands. The loop lives in the status, so a daemon restart does not reset it.
    fn count_crash(&self, st: &ContainerStatus, e: &Exit) -> CrashLoopStatus {
        let mut l = st.crash_loop.clone().unwrap_or_default();
        if (l.generation, l.finished_at) != (e.generation, e.finished_at) || l.crashes == 0 {
            let long_run = e.ran_for().is_some_and(|d| d >= self.cfg.backoff_reset);
            l.crashes = if long_run { 1 } else { l.crashes + 1 };
            l.generation = e.generation;
            l.finished_at = e.finished_at;
        }
        l
    }

    /// Observe → decide → act for one Container that is not being deleted.
    async fn apply(&self, ctx: &Context, obj: AnyObject) -> Result<Action, Error> {
        let key = obj.key()?;
        let c: Container = obj.typed().map_err(|source| ContainerError::Decode {
            key: key.clone(),
            source,
        })?;
        let s = Step {
            ctx,
            obj: &obj,
            key: &key,
            uid: c.metadata.uid.clone().unwrap_or_default(),
            generation: c.metadata.generation,
            user_generation: c.metadata.generation,
            c: &c,
        };
        let Some(rt) = self.runtimes.serving(&c.spec).cloned() else {
            let mut st = c.status.clone();
            let msg = "this daemon has no docker runtime";
            status::pending(&mut st, s.generation, "RuntimeUnavailable", msg);
            return s.write(&st, Action::await_change()).await;
        };
        // Observe.
        self.clear_other_runtimes(&s, &rt).await?;
        let observed = rt
            .inspect(&s.uid)
            .await
            .map_err(drv(&s.uid, rt.name(), "inspect"))?;
        // Which revision runs, and the rollout steps due now.
        let Plan::Run {
            obj,
            target,
            wake_by,
            reobserve,
        } = self.plan(ctx, obj.clone(), &c, &rt, &observed).await?;
        let observed = match reobserve {
            // A rollout step may have stopped the workload: look again.
            true => rt
                .inspect(&s.uid)
                .await
                .map_err(drv(&s.uid, rt.name(), "inspect"))?,
            false => observed,
        };
        let s = Step {
            obj: &obj,
            generation: target.metadata.generation,
            user_generation: c.metadata.generation,
            c: &target,
            ..s
        };
        // Decide.
        let (facts, crash_loop) = self.facts(&s, &target, observed.clone());
        let decision = decide(observed, &facts);
        // Act.
        let action = self.act(&s, &rt, decision, crash_loop).await?;
        Ok(match (wake_by, action.requeue_after()) {
            (Some(w), Some(a)) if a <= w => action,
            (Some(w), _) => Action::requeue(w),
            (None, _) => action,
        })
    }

    /// A runtime switch leaves the old runtime's workload behind: stop and remove it. An
    /// unreachable other runtime is skipped (its leftover goes on a later reconcile): dockerd
    /// being down must not stall native containers.
    async fn clear_other_runtimes(
        &self,
        s: &Step<'_>,
        rt: &Arc<dyn ContainerRuntime>,
    ) -> Result<(), Error> {
        let uid = &s.uid;
        for other in self.runtimes().into_iter().filter(|o| !Arc::ptr_eq(o, rt)) {
            let seen = match other.inspect(uid).await {
                Err(e) if e.is_unavailable() => continue,
                r => r.map_err(drv(uid, other.name(), "inspect"))?,
            };
            if seen != Observed::Absent {
                other
                    .stop(uid, grace(&s.c.spec))
                    .await
                    .map_err(drv(uid, other.name(), "stop"))?;
                other
                    .remove(uid)
                    .await
                    .map_err(drv(uid, other.name(), "remove"))?;
            }
        }
        Ok(())
    }

    /// What the decision needs besides the observation: the crash loop is counted only for an
    /// ended run of the current generation.
    fn facts(
        &self,
        s: &Step<'_>,
        c: &Container,
        observed: Observed,
    ) -> (Facts, Option<CrashLoopStatus>) {
        let ended = match &observed {
            Observed::Exited(e) => e.generation == s.generation,
            Observed::Lost { generation } => *generation == s.generation,
            _ => false,
        };
        let (crashes, since_exit) = match ended {
            true => {
                let e = exit_of(observed, s.generation);
                let since = e
                    .finished_at
                    .and_then(|f| (chrono::Utc::now() - f).to_std().ok())
                    .unwrap_or(Duration::MAX);
                (Some(self.count_crash(&c.status, &e)), since)
            }
            false => (None, Duration::MAX),
        };
        let facts = Facts {
            generation: s.generation,
            policy: c.spec.restart_policy,
            crashes: crashes.as_ref().map_or(0, |l| l.crashes),
            backoff_base: self.cfg.backoff_base,
            backoff_max: self.cfg.backoff_max,
            since_exit,
        };
        (facts, crashes)
    }

    async fn act(
        &self,
        s: &Step<'_>,
        rt: &Arc<dyn ContainerRuntime>,
        decision: Decision,
        crash_loop: Option<CrashLoopStatus>,
    ) -> Result<Action, Error> {
        let (uid, generation) = (&s.uid, s.generation);
        let mut st = s.c.status.clone();
        if crash_loop.is_some() {
            st.crash_loop = crash_loop;
        }
        if !matches!(decision, Decision::Keep(_)) {
            self.prober.forget(uid);
        }
        let start = match decision {
            Decision::Keep(r) => return self.keep(s, rt, r).await,
            Decision::AwaitExit => return Ok(Action::requeue(Duration::from_millis(20))),
            Decision::Finished(e) => {
                status::finished(&mut st, generation, &e);
                return s.write(&st, Action::await_change()).await;
            }
            Decision::BackOff { exit, wait, left } => {
                status::backing_off(&mut st, generation, &exit, wait);
                return s.write(&st, Action::requeue(left)).await;
            }
            Decision::Replace(r) => {
                let why = format!(
                    "spec changed (generation {} → {generation}); stopping pid {}",
                    r.generation, r.pid
                );
                s.ctx
                    .event(s.obj, EventType::Normal, "Replacing", why)
                    .await;
                let stopped =
                    rt.stop(uid, grace(&s.c.spec))
                        .await
                        .map_err(drv(uid, rt.name(), "stop"))?;
                Start {
                    last: stopped,
                    restart: false,
                    new_loop: true,
                }
            }
            Decision::Start {
                last,
                restart,
                new_loop,
            } => Start {
                last,
                restart,
                new_loop,
            },
        };
        if start.new_loop {
            st.crash_loop = None;
        }
        if let Some(e) = &start.last {
            st.last_state = Some(status::last_state(e));
        }
        self.start(s, rt, st, u32::from(start.restart)).await
    }

    /// The workload runs the current generation: watch its exit, refresh its attachments, put
    /// back what drifted around it, and write the status.
    async fn keep(
        &self,
        s: &Step<'_>,
        rt: &Arc<dyn ContainerRuntime>,
        r: Running,
    ) -> Result<Action, Error> {
        let mut st = s.c.status.clone();
        self.watch(rt, &s.uid, &r);
        let networks = match self.attach(s.c, &s.uid).await? {
            Attach::Ready { networks, .. } => {
                st.ports = s.c.spec.ports.clone();
                networks
            }
            Attach::Waiting { .. } => st.networks.clone(),
        };
        let w = self.workload(s.c, None, None);
        let repairs = rt
            .repair(&w, &r)
            .await
            .map_err(drv(&s.uid, rt.name(), "repair"))?;
        if !repairs.is_empty() {
            s.ctx.drift_repaired();
            s.ctx
                .event(
                    s.obj,
                    EventType::Warning,
                    "DriftRepaired",
                    repairs.join("; "),
                )
                .await;
        }
        let h = self.health(s, rt, &r, Seed::resumed_from(&s.c.status, &r));
        if let Some(why) = &h.unhealthy {
            return self.restart_unhealthy(s, rt, st, why).await;
        }
        status::running(&mut st, s.generation, &r, networks, rt.name(), &h);
        st.container_id = rt.container_id(&s.uid);
        s.write(&st, Action::await_change()).await
    }

    /// The health of the run `r`, from its probe worker (started here when it has none).
    fn health(
        &self,
        s: &Step<'_>,
        rt: &Arc<dyn ContainerRuntime>,
        r: &Running,
        seed: Seed,
    ) -> Health {
        self.health_of(&s.uid, rt, r, &s.c.spec.probes(), seed)
    }

    pub(super) fn health_of(
        &self,
        uid: &str,
        rt: &Arc<dyn ContainerRuntime>,
        r: &Running,
        probes: &tend_schema::kinds::container::Probes,
        seed: Seed,
    ) -> Health {
        let target = ProbeTarget {
            uid: uid.to_string(),
            pid: r.pid,
            runtime: rt.clone(),
        };
        let run = RunId {
            generation: r.generation,
            pid: r.pid,
            start_time: r.start_time,
        };
        self.prober.health(target, run, probes, seed)
    }

    /// A liveness (or startup) probe failed for good: a Warning event with its output, stop the
    /// workload, and start it again per the restart policy, counted in `restartCount` and shown
    /// as `lastState.reason: Unhealthy`.
    async fn restart_unhealthy(
        &self,
        s: &Step<'_>,
        rt: &Arc<dyn ContainerRuntime>,
        mut st: ContainerStatus,
        why: &str,
    ) -> Result<Action, Error> {
        let uid = &s.uid;
        self.prober.forget(uid);
        s.ctx
            .event(s.obj, EventType::Warning, "Unhealthy", why.to_string())
            .await;
        let exit = rt
            .stop(uid, grace(&s.c.spec))
            .await
            .map_err(drv(uid, rt.name(), "stop"))?;
        let exit = exit.unwrap_or_else(|| exit_of(Observed::Absent, s.generation));
        let mut last = status::last_state(&exit);
        last.reason = "Unhealthy".into();
        st.last_state = Some(last);
        if !status::should_restart(s.c.spec.restart_policy, &exit) {
            status::finished(&mut st, s.generation, &exit);
            if let Some(l) = st.last_state.as_mut() {
                l.reason = "Unhealthy".into();
            }
            status::not_ready(&mut st, s.generation, "Unhealthy", why);
            return s.write(&st, Action::await_change()).await;
        }
        status::not_ready(&mut st, s.generation, "Unhealthy", why);
        self.start(s, rt, st, 1).await
    }

    /// Starts the workload (first run, restart, replacement) once its rootfs and networks are
    /// ready; until then the Container is Pending with the reason.
    async fn start(
        &self,
        s: &Step<'_>,
        rt: &Arc<dyn ContainerRuntime>,
        mut st: ContainerStatus,
        restarts: u32,
    ) -> Result<Action, Error> {
        let (uid, generation) = (&s.uid, s.generation);
        if let Some(why) = depends::unmet(s.ctx, &self.runtimes, s.c).await {
            status::pending(&mut st, generation, "WaitingForDependency", &why);
            return s.write(&st, Action::await_change()).await;
        }
        let rootfs = match rootfs::resolve(s.ctx, s.c).await? {
            RootfsState::Ready(p) => p,
            RootfsState::Waiting(msg) => {
                status::pending(&mut st, generation, "WaitingForSandbox", &msg);
                return s.write(&st, Action::await_change()).await;
            }
        };
        let spec = match rootfs::effective_spec(s.ctx, s.c, rootfs.as_deref()).await? {
            Ok(spec) => spec,
            Err(e) => {
                let reason = match e {
                    DefaultsError::NoCommand => "NoCommand",
                    DefaultsError::User(..) => "ImageUserUnknown",
                };
                status::pending(&mut st, generation, reason, &e.to_string());
                return s.write(&st, Action::await_change()).await;
            }
        };
        let (netns, networks) = match self.attach(s.c, uid).await? {
            Attach::Ready { netns, networks } => (netns, networks),
            Attach::Waiting { reason, message } => {
                st.ports.clear();
                status::pending(&mut st, generation, &reason, &message);
                return s.write(&st, Action::await_change()).await;
            }
        };
        let mut w = self.workload(s.c, rootfs, netns);
        w.spec = spec;
        if w.spec.security().user_namespace {
            let ns = match self.user_namespace(s).await? {
                Ok(ns) => ns,
                Err(full) => {
                    // Level-triggered: a delete elsewhere frees a range; look again shortly.
                    let why = full.to_string();
                    status::pending(&mut st, generation, "UserNamespacePoolExhausted", &why);
                    return s.write(&st, Action::requeue(Duration::from_secs(10))).await;
                }
            };
            st.user_namespace = Some(ns);
            w.user_namespace = Some(ns);
        } else {
            // A spec that turned it off runs without one; the range stays held until delete.
            st.user_namespace = None;
        }
        let r = match rt.start(&w).await {
            Ok(r) => r,
            Err(e) => {
                if !e.is_fault() {
                    status::pending(&mut st, generation, "StartFailed", &e.to_string());
                    let _ = s.ctx.write_status(s.obj, &st).await;
                    // Deduplicated by the store: a start that keeps failing is one event with a count.
                    s.ctx
                        .event(s.obj, EventType::Warning, "StartFailed", e.to_string())
                        .await;
                }
                return Err(drv(uid, rt.name(), "start")(e).into());
            }
        };
        self.watch(rt, uid, &r);
        st.ports = s.c.spec.ports.clone();
        st.restart_count += restarts;
        let h = self.health(s, rt, &r, Seed::Fresh);
        status::running(&mut st, generation, &r, networks, rt.name(), &h);
        st.container_id = rt.container_id(uid);
        s.write(&st, Action::await_change()).await
    }

    /// The host id range of the Container's user namespace: the one it holds, else a new one
    /// from the pool. Held until the Container is deleted ([`Self::cleanup`] releases it), so a
    /// restart, a new generation or a daemon restart keeps the same host ids.
    async fn user_namespace(
        &self,
        s: &Step<'_>,
    ) -> Result<Result<UserNamespaceStatus, IdRangeError>, Error> {
        match s
            .ctx
            .store
            .allocate_id_range(&s.uid, self.cfg.id_pool)
            .await
        {
            Ok(r) => Ok(Ok(UserNamespaceStatus {
                host_id: r.first,
                size: r.size,
            })),
            Err(StoreError::IdRange(full)) => Ok(Err(full)),
            Err(e) => Err(store_err(s.key, "allocate user namespace ids")(e).into()),
        }
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
            user_namespace: None,
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
            // The delete's own grace (`tend delete --grace-period`) wins over the spec's.
            let grace = match c.metadata.deletion_grace_period_seconds {
                Some(g) => Duration::from_secs(g.max(0) as u64),
                None => grace(&c.spec),
            };
            let result = match rt.stop(&uid, grace).await {
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
        self.drop_snapshots(ctx, &key, &uid).await?;
        // Only now that nothing of the workload is left may its host ids go to another.
        ctx.store
            .release_id_range(&uid)
            .await
            .map_err(store_err(&key, "release user namespace ids"))?;
        self.prober.forget(&uid);
        lock(&self.watched).remove(&uid);
        Ok(Cleanup::Done)
    }
}

pub(super) fn grace(spec: &ContainerSpec) -> Duration {
    Duration::from_secs(u64::from(spec.grace_period_seconds()))
}

/// One reconcile's object, as the observe, decide and act steps share it.
struct Step<'a> {
    ctx: &'a Context,
    obj: &'a AnyObject,
    key: &'a ObjectKey,
    uid: String,
    /// The generation of the revision being run (the user's, unless it was rolled back).
    generation: i64,
    /// The object's `metadata.generation`: what `status.observedGeneration` reports.
    user_generation: i64,
    c: &'a Container,
}

impl Step<'_> {
    /// Writes `st` (when it changed) and returns `then`.
    async fn write(&self, st: &ContainerStatus, then: Action) -> Result<Action, Error> {
        let mut st = st.clone();
        if st.common.observed_generation != 0 {
            st.common.observed_generation = self.user_generation;
        }
        self.ctx
            .write_status(self.obj, &st)
            .await
            .map_err(store_err(self.key, "write status"))?;
        Ok(then)
    }
}

/// How a decided start goes: which run to show as `lastState`, whether it counts as a restart,
/// whether the crash loop starts afresh.
struct Start {
    last: Option<Exit>,
    restart: bool,
    new_loop: bool,
}

#[async_trait]
impl Reconciler for ContainerReconciler {
    fn kind(&self) -> Kind {
        Kind::Container
    }

    /// Removes the host objects of uids no Container owns (orphans of this instance).
    async fn observe(&self, ctx: &Context) -> Result<(), Error> {
        if let Some(d) = &self.snapshots {
            crate::snapshot::observe_class(&**d, TreeClass::Revisions).await?;
        }
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
