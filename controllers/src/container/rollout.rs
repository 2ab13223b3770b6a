//! Revisions and health-gated rollouts of a Container: which revision's spec the reconcile
//! runs, and the rollout steps around it (snapshot the data, start the new revision, wait for
//! Ready, roll back and restore the data).
//!
//! # Guarantees
//! - Each step is written to `status.rollout` before it is carried out, and every step is
//!   idempotent, so a daemon killed at any point resumes the same rollout after a restart and
//!   ends in exactly one of: the new revision Ready, or the old revision running on the data
//!   it left (the snapshot). A Container has one workload slot in its runtime, so the two
//!   revisions never run at once; a restore is one atomic exchange of the Sandbox tree.
//! - A rolled-back generation stays the user's `metadata.generation`; `status.rolledBack`
//!   says which revision runs instead until the spec changes again.
//! - `Recreate` (the default) keeps the old behaviour: no snapshot, no gate.
//!
//! # Failpoints
//! `rollout.stop`, `rollout.snapshot`, `rollout.after-snapshot`, `rollout.restore-target`,
//! `rollout.start`, `rollout.rollback`, `rollout.restore`, `rollout.after-restore`, and
//! `snapshot.restore.exchange` inside the driver (the copy is built, not yet exchanged).

use super::driver::{ContainerRuntime, Observed};
use super::faults::store_err;
use super::probe::Verdict;
use super::prober::Seed;
use super::reconcile::{grace, Container, ContainerReconciler};
use super::ContainerError;
use crate::action::Error;
use crate::context::Context;
use crate::snapshot::{ReconcileError, TreeClass};
use std::sync::Arc;
use std::time::Duration;
use tend_schema::kinds::container::{
    rootfs_sandbox_name, ContainerStatus, ImageUpdate, RolledBack, RolloutStatus, RolloutStep,
    StrategyType,
};
use tend_schema::store::{EventType, Revision};
use tend_schema::{AnyObject, ConditionStatus, Kind, ObjectKey};

/// What the reconcile runs after the rollout logic had its say.
pub(super) enum Plan {
    /// Run `target` (the object with the spec and generation of the revision to run, and the
    /// status so far) through observe → decide → act; look again within `wake_by` at the
    /// latest (a rollout's deadline).
    Run {
        obj: AnyObject,
        target: Container,
        wake_by: Option<Duration>,
        /// A rollout step ran (it may have stopped the workload): observe again.
        reobserve: bool,
    },
}

/// One Container's facts for the rollout steps.
struct Ro<'a> {
    ctx: &'a Context,
    key: ObjectKey,
    uid: String,
    c: &'a Container,
    revs: Vec<Revision>,
}

fn step_failed(key: &ObjectKey, what: &str, e: impl std::fmt::Display) -> Error {
    format!("{key}: rollout {what}: {e}").into()
}

async fn failpoint(key: &ObjectKey, name: &str) -> Result<(), Error> {
    tend_schema::failpoint::check_async(name)
        .await
        .map_err(|e| step_failed(key, name, e))
}

impl Ro<'_> {
    fn by_generation(&self, g: i64) -> Option<&Revision> {
        self.revs.iter().find(|r| r.generation == g)
    }

    fn by_number(&self, n: u64) -> Option<&Revision> {
        self.revs.iter().find(|r| r.revision == n)
    }

    /// The object as revision `rev` would have it: its spec and generation, `st` as status.
    fn as_revision(&self, rev: &Revision, st: ContainerStatus) -> Result<Container, Error> {
        let mut t = self.c.clone();
        t.spec =
            serde_json::from_value(rev.spec.clone()).map_err(|source| ContainerError::Decode {
                key: self.key.clone(),
                source,
            })?;
        t.metadata.generation = rev.generation;
        t.status = st;
        Ok(t)
    }

    fn with_status(&self, st: ContainerStatus) -> Container {
        let mut t = self.c.clone();
        t.status = st;
        t
    }

    /// Writes `st` and returns the stored object (so the next write is not a conflict).
    async fn persist(&self, obj: &AnyObject, st: &ContainerStatus) -> Result<AnyObject, Error> {
        Ok(self
            .ctx
            .write_status(obj, st)
            .await
            .map_err(store_err(&self.key, "write status"))?)
    }

    /// The uid of the Sandbox holding the container's data.
    async fn sandbox_uid(&self) -> Result<String, Error> {
        let name = match &self.c.spec.rootfs {
            Some(r) => match (&r.sandbox, &r.state) {
                (Some(s), _) => s.clone(),
                _ => rootfs_sandbox_name(&self.c.metadata.name),
            },
            None => {
                return Err(step_failed(
                    &self.key,
                    "snapshot",
                    "the container has no Sandbox",
                ))
            }
        };
        let key = ObjectKey::new(Kind::Sandbox, &self.key.namespace, &name);
        let sb = self
            .ctx
            .get(&key)
            .await
            .map_err(store_err(&key, "get"))?
            .ok_or_else(|| step_failed(&self.key, "snapshot", format!("{key} does not exist")))?;
        Ok(sb.metadata.uid.unwrap_or_default())
    }
}

fn progressing(st: &mut ContainerStatus, g: i64, status: ConditionStatus, reason: &str, msg: &str) {
    st.common
        .set_condition("Progressing", status, reason, msg, g);
}

/// The generation of the workload the runtime has for this Container, whatever its state.
fn workload_generation(o: &Observed) -> Option<i64> {
    match o {
        Observed::Running(r) => Some(r.generation),
        Observed::Exited(e) => Some(e.generation),
        Observed::Lost { generation } | Observed::Exiting { generation } => Some(*generation),
        Observed::Absent => None,
    }
}

impl ContainerReconciler {
    /// Decides which revision runs and carries out the rollout steps due now.
    pub(super) async fn plan(
        &self,
        ctx: &Context,
        obj: AnyObject,
        c: &Container,
        rt: &Arc<dyn ContainerRuntime>,
        observed: &Observed,
    ) -> Result<Plan, Error> {
        let key = obj.key()?;
        let uid = c.metadata.uid.clone().unwrap_or_default();
        let revs = ctx
            .store
            .revisions(&uid)
            .await
            .map_err(store_err(&key, "revisions"))?;
        let ro = Ro {
            ctx,
            key,
            uid,
            c,
            revs,
        };
        let g = c.metadata.generation;
        let mut st = c.status.clone();
        if let Some(r) = st.rollout.clone() {
            return self.resume(&ro, obj, st, r, rt, observed).await;
        }
        let image = super::rootfs::rootfs_image(ctx, c).await?;
        if let Some(rb) = st.rolled_back.clone() {
            // A rolled-back image stays rolled back until the State's digest moves again.
            let image_moved = match (&rb.image_digest, &image) {
                (Some(bad), Some(now)) => bad != &now.digest,
                _ => false,
            };
            if rb.generation == g && !image_moved {
                if let Some(rev) = ro.by_number(rb.revision) {
                    let target = ro.as_revision(rev, st)?;
                    return Ok(Plan::Run {
                        obj,
                        target,
                        wake_by: None,
                        reobserve: false,
                    });
                }
            }
            st.rolled_back = None;
        }
        let Some(to) = ro.by_generation(g).cloned() else {
            // Written before revisions existed: run the spec as it is.
            return Ok(Plan::Run {
                obj,
                target: ro.with_status(st),
                wake_by: None,
                reobserve: false,
            });
        };
        let strategy = c.spec.strategy();
        let from = st.revision.and_then(|n| ro.by_number(n)).cloned();
        let replacing = workload_generation(observed).is_some_and(|wg| wg != g);
        let gated = strategy.type_ == StrategyType::Rollout || to.restore_snapshot.is_some();
        match from {
            Some(from) if replacing && gated && from.revision != to.revision => {
                let r = RolloutStatus {
                    step: RolloutStep::Snapshotting,
                    from_revision: from.revision,
                    from_generation: from.generation,
                    to_revision: to.revision,
                    to_generation: g,
                    snapshot: strategy
                        .snapshot_data
                        .then(|| TreeClass::revision_tree(&ro.uid, from.revision)),
                    deadline: None,
                    reason: String::new(),
                    image: None,
                };
                let msg = format!("revision {} → {}", from.revision, to.revision);
                progressing(&mut st, g, ConditionStatus::True, "RollingOut", &msg);
                st.rollout = Some(r.clone());
                let obj = ro.persist(&obj, &st).await?;
                ctx.event(&obj, EventType::Normal, "RollingOut", msg).await;
                self.resume(&ro, obj, st, r, rt, observed).await
            }
            _ => {
                if st.revision != Some(to.revision) {
                    st.revision = Some(to.revision);
                    self.prune(&ro, &[to.revision]).await?;
                }
                if let Some(now) = image.filter(|_| !replacing) {
                    match st.image_digest.clone() {
                        // The first run: its Sandbox is a snapshot of what the State holds now.
                        None => st.image_digest = Some(now.digest),
                        Some(old) if old != now.digest => {
                            let change = ImageUpdate {
                                state: now.state,
                                from: old,
                                to: now.digest,
                            };
                            return self
                                .image_changed(&ro, obj, st, change, to.revision, rt, observed)
                                .await;
                        }
                        Some(_) => {}
                    }
                }
                Ok(Plan::Run {
                    obj,
                    target: ro.with_status(st),
                    wake_by: None,
                    reobserve: false,
                })
            }
        }
    }

    /// The rootfs State holds new image content (`pullPolicy: Always` found a new digest):
    /// `Recreate` stops the workload, refreshes its Sandbox from the State and starts it again;
    /// `Rollout` runs the same health-gated rollout as a spec change, between the same revision
    /// on the old and the new content. The Sandbox is always snapshotted first for an image
    /// rollout (the State no longer holds the old content, so the snapshot is the only way back).
    #[allow(clippy::too_many_arguments)]
    async fn image_changed(
        &self,
        ro: &Ro<'_>,
        obj: AnyObject,
        mut st: ContainerStatus,
        change: ImageUpdate,
        revision: u64,
        rt: &Arc<dyn ContainerRuntime>,
        observed: &Observed,
    ) -> Result<Plan, Error> {
        let g = ro.c.metadata.generation;
        let msg = format!(
            "State {} now holds {} (was {})",
            change.state, change.to, change.from
        );
        if ro.c.spec.strategy().type_ == StrategyType::Rollout {
            let r = RolloutStatus {
                step: RolloutStep::Snapshotting,
                from_revision: revision,
                from_generation: g,
                to_revision: revision,
                to_generation: g,
                snapshot: Some(TreeClass::revision_tree(&ro.uid, revision)),
                deadline: None,
                reason: String::new(),
                image: Some(change),
            };
            let msg = format!("{msg}; rolling out");
            progressing(&mut st, g, ConditionStatus::True, "RollingOut", &msg);
            st.rollout = Some(r.clone());
            let obj = ro.persist(&obj, &st).await?;
            ro.ctx.event(&obj, EventType::Normal, "NewImage", msg).await;
            return self.resume(ro, obj, st, r, rt, observed).await;
        }
        ro.ctx
            .event(
                &obj,
                EventType::Normal,
                "NewImage",
                format!("{msg}; replacing the workload"),
            )
            .await;
        self.clear_workload(ro, rt).await?;
        self.refresh(ro, &change.state).await?;
        st.image_digest = Some(change.to);
        let obj = ro.persist(&obj, &st).await?;
        Ok(Plan::Run {
            obj,
            target: ro.with_status(st),
            wake_by: None,
            reobserve: true,
        })
    }

    /// Stops and removes the workload, so the next start is a fresh run of the same generation
    /// (not a restart counted against the restart policy). Idempotent.
    async fn clear_workload(
        &self,
        ro: &Ro<'_>,
        rt: &Arc<dyn ContainerRuntime>,
    ) -> Result<(), Error> {
        self.stop_any(ro, rt).await?;
        rt.remove(&ro.uid)
            .await
            .map_err(super::faults::drv(&ro.uid, rt.name(), "remove"))?;
        Ok(())
    }

    /// Replaces the content of the Container's Sandbox with the State's tree (atomic;
    /// idempotent): the Sandbox becomes a fresh writable snapshot of the new image content.
    async fn refresh(&self, ro: &Ro<'_>, state: &str) -> Result<(), Error> {
        let d = self.snapshots(&ro.key)?;
        let sb = ro.sandbox_uid().await?;
        let key = ObjectKey::new(Kind::State, &ro.key.namespace, state);
        let su = ro
            .ctx
            .get(&key)
            .await
            .map_err(store_err(&key, "get"))?
            .and_then(|o| o.metadata.uid)
            .ok_or_else(|| step_failed(&ro.key, "refresh", format!("{key} does not exist")))?;
        d.restore((TreeClass::States, &su), (TreeClass::Sandboxes, &sb))
            .await
            .map_err(ReconcileError::tree(&ro.key, "refresh from the State"))?;
        Ok(())
    }

    /// Carries out the rollout `r` from its recorded step on.
    async fn resume(
        &self,
        ro: &Ro<'_>,
        mut obj: AnyObject,
        mut st: ContainerStatus,
        mut r: RolloutStatus,
        rt: &Arc<dyn ContainerRuntime>,
        observed: &Observed,
    ) -> Result<Plan, Error> {
        let key = &ro.key;
        let g = ro.c.metadata.generation;
        let to_rev = ro.by_number(r.to_revision).cloned();
        // `observed` was seen before this call; once a step here stopped the workload it is
        // stale (an image rollout keeps the generation, so the old run would look current).
        let mut stale = false;
        loop {
            match r.step {
                RolloutStep::Snapshotting => {
                    stale = true;
                    failpoint(key, "rollout.stop").await?;
                    self.stop_any(ro, rt).await?;
                    if let Some(tree) = &r.snapshot {
                        failpoint(key, "rollout.snapshot").await?;
                        self.take_snapshot(ro, tree).await?;
                        ro.ctx
                            .store
                            .set_revision_snapshot(&ro.uid, r.from_revision, Some(tree))
                            .await
                            .map_err(store_err(key, "record snapshot"))?;
                        failpoint(key, "rollout.after-snapshot").await?;
                    }
                    let restore = to_rev.as_ref().and_then(|t| t.restore_snapshot.clone());
                    r.step = match (restore, &r.image) {
                        (None, None) => RolloutStep::Progressing,
                        _ => RolloutStep::RestoringTarget,
                    };
                    if r.step == RolloutStep::Progressing {
                        r.deadline = Some(self.deadline(ro));
                    }
                }
                RolloutStep::RestoringTarget => {
                    stale = true;
                    failpoint(key, "rollout.restore-target").await?;
                    if let Some(i) = &r.image {
                        self.clear_workload(ro, rt).await?;
                        self.refresh(ro, &i.state).await?;
                    } else if let Some(src) =
                        to_rev.as_ref().and_then(|t| t.restore_snapshot.clone())
                    {
                        self.restore(ro, &src).await?;
                    }
                    r.step = RolloutStep::Progressing;
                    r.deadline = Some(self.deadline(ro));
                }
                RolloutStep::Progressing => {
                    if r.to_generation != g {
                        r.step = RolloutStep::RollingBack;
                        r.reason = format!("superseded by generation {g}");
                    } else if !stale && self.ready_now(ro, rt, observed, r.to_generation, &st) {
                        return self.complete(ro, obj, st, r).await;
                    } else {
                        let left = r
                            .deadline
                            .and_then(|d| (d - chrono::Utc::now()).to_std().ok())
                            .unwrap_or(Duration::ZERO);
                        let gated = ro.c.spec.strategy().type_ == StrategyType::Rollout;
                        if !gated {
                            return self.complete(ro, obj, st, r).await;
                        }
                        if left.is_zero() {
                            r.step = RolloutStep::RollingBack;
                            let secs = ro.c.spec.strategy().progress_deadline().as_secs();
                            r.reason = not_ready_reason(&st, r.to_generation, secs);
                        } else {
                            failpoint(key, "rollout.start").await?;
                            st.rollout = Some(r);
                            obj = ro.persist(&obj, &st).await?;
                            return Ok(Plan::Run {
                                obj,
                                target: ro.with_status(st),
                                wake_by: Some(left),
                                reobserve: true,
                            });
                        }
                    }
                }
                RolloutStep::RollingBack => {
                    failpoint(key, "rollout.rollback").await?;
                    match r.image {
                        // The same generation comes back: a fresh run, not a restart.
                        Some(_) => self.clear_workload(ro, rt).await?,
                        None => self.stop_any(ro, rt).await?,
                    }
                    if let Some(tree) = &r.snapshot {
                        failpoint(key, "rollout.restore").await?;
                        self.restore(ro, tree).await?;
                        failpoint(key, "rollout.after-restore").await?;
                    }
                    return self.rolled_back(ro, obj, st, r).await;
                }
            }
            st.rollout = Some(r.clone());
            obj = ro.persist(&obj, &st).await?;
        }
    }

    fn deadline(&self, ro: &Ro<'_>) -> chrono::DateTime<chrono::Utc> {
        let d = ro.c.spec.strategy().progress_deadline();
        chrono::Utc::now() + chrono::Duration::from_std(d).unwrap_or_default()
    }

    /// Stops whatever workload the Container has (idempotent).
    async fn stop_any(&self, ro: &Ro<'_>, rt: &Arc<dyn ContainerRuntime>) -> Result<(), Error> {
        self.prober.forget(&ro.uid);
        rt.stop(&ro.uid, grace(&ro.c.spec))
            .await
            .map_err(super::faults::drv(&ro.uid, rt.name(), "stop"))?;
        Ok(())
    }

    fn snapshots(
        &self,
        key: &ObjectKey,
    ) -> Result<&Arc<dyn crate::snapshot::SnapshotDriver>, Error> {
        self.snapshots
            .as_ref()
            .ok_or_else(|| step_failed(key, "snapshot", "this daemon has no snapshot driver"))
    }

    /// A read-only snapshot of the Sandbox as tree `tree` (a leftover of an earlier attempt
    /// is replaced: the workload is stopped, so the data is the same).
    async fn take_snapshot(&self, ro: &Ro<'_>, tree: &str) -> Result<(), Error> {
        let d = self.snapshots(&ro.key)?;
        let sb = ro.sandbox_uid().await?;
        d.delete(TreeClass::Revisions, tree)
            .await
            .map_err(ReconcileError::tree(&ro.key, "delete old snapshot"))?;
        d.snapshot(
            (TreeClass::Sandboxes, &sb),
            (TreeClass::Revisions, tree),
            true,
        )
        .await
        .map_err(ReconcileError::tree(&ro.key, "snapshot"))?;
        Ok(())
    }

    /// Puts the data of snapshot `tree` back into the Sandbox (atomic; idempotent).
    async fn restore(&self, ro: &Ro<'_>, tree: &str) -> Result<(), Error> {
        let d = self.snapshots(&ro.key)?;
        let sb = ro.sandbox_uid().await?;
        d.restore((TreeClass::Revisions, tree), (TreeClass::Sandboxes, &sb))
            .await
            .map_err(ReconcileError::tree(&ro.key, "restore"))?;
        Ok(())
    }

    /// Whether the workload of generation `g` runs and passes its probes now.
    fn ready_now(
        &self,
        ro: &Ro<'_>,
        rt: &Arc<dyn ContainerRuntime>,
        observed: &Observed,
        g: i64,
        st: &ContainerStatus,
    ) -> bool {
        let Observed::Running(r) = observed else {
            return false;
        };
        if r.generation != g {
            return false;
        }
        let h = self.health_of(
            &ro.uid,
            rt,
            r,
            &ro.c.spec.probes(),
            Seed::resumed_from(st, r),
        );
        h.started && h.unhealthy.is_none() && h.ready == Verdict::Success
    }

    async fn complete(
        &self,
        ro: &Ro<'_>,
        obj: AnyObject,
        mut st: ContainerStatus,
        r: RolloutStatus,
    ) -> Result<Plan, Error> {
        let g = ro.c.metadata.generation;
        let kept = match &r.snapshot {
            Some(_) => format!("; data snapshot of revision {} kept", r.from_revision),
            None => String::new(),
        };
        let msg = match &r.image {
            Some(i) => format!(
                "image {} of State {} is Ready (revision {}); data snapshot of {} kept",
                i.to, i.state, r.to_revision, i.from
            ),
            None => format!("revision {} is Ready{kept}", r.to_revision),
        };
        if let Some(i) = &r.image {
            st.image_digest = Some(i.to.clone());
        }
        progressing(&mut st, g, ConditionStatus::False, "RolloutComplete", &msg);
        st.rollout = None;
        st.rolled_back = None;
        st.revision = Some(r.to_revision);
        let obj = ro.persist(&obj, &st).await?;
        ro.ctx
            .event(&obj, EventType::Normal, "RolloutComplete", msg)
            .await;
        self.prune(ro, &[r.to_revision]).await?;
        Ok(Plan::Run {
            obj,
            target: ro.with_status(st),
            wake_by: None,
            reobserve: true,
        })
    }

    async fn rolled_back(
        &self,
        ro: &Ro<'_>,
        obj: AnyObject,
        mut st: ContainerStatus,
        r: RolloutStatus,
    ) -> Result<Plan, Error> {
        let g = ro.c.metadata.generation;
        let data = match &r.snapshot {
            Some(_) => " (data restored)",
            None => "",
        };
        let msg = match &r.image {
            Some(i) => format!(
                "image {} of State {} {}; back to {}{data}",
                i.to, i.state, r.reason, i.from
            ),
            None => format!(
                "revision {} {}; back to {}{data}",
                r.to_revision, r.reason, r.from_revision
            ),
        };
        progressing(&mut st, g, ConditionStatus::False, "RolledBack", &msg);
        st.rollout = None;
        st.revision = Some(r.from_revision);
        st.rolled_back = Some(RolledBack {
            generation: r.to_generation,
            revision: r.from_revision,
            reason: r.reason.clone(),
            image_digest: r.image.as_ref().map(|i| i.to.clone()),
        });
        let obj = ro.persist(&obj, &st).await?;
        ro.ctx
            .event(&obj, EventType::Warning, "RolledBack", msg)
            .await;
        self.prune(ro, &[r.from_revision, r.to_revision]).await?;
        let from = ro.by_number(r.from_revision).ok_or_else(|| {
            step_failed(
                &ro.key,
                "rollback",
                format!("revision {} is gone", r.from_revision),
            )
        })?;
        let target = ro.as_revision(from, st)?;
        Ok(Plan::Run {
            obj,
            target,
            wake_by: None,
            reobserve: true,
        })
    }

    /// Drops the revisions beyond `revisionHistoryLimit` (oldest first), their data snapshots
    /// before their rows; `keep` and the running revision always stay.
    async fn prune(&self, ro: &Ro<'_>, keep: &[u64]) -> Result<(), Error> {
        let limit = ro.c.spec.strategy().history_limit() as usize;
        // Read again: this reconcile may have recorded a snapshot since `ro.revs` was read.
        let revs = ro
            .ctx
            .store
            .revisions(&ro.uid)
            .await
            .map_err(store_err(&ro.key, "revisions"))?;
        let mut newest: Vec<&Revision> = revs.iter().collect();
        newest.sort_by_key(|r| std::cmp::Reverse(r.revision));
        let running = ro.c.status.revision;
        for rev in newest.into_iter().skip(limit) {
            if keep.contains(&rev.revision) || running == Some(rev.revision) {
                continue;
            }
            if let Some(tree) = &rev.snapshot {
                self.snapshots(&ro.key)?
                    .delete(TreeClass::Revisions, tree)
                    .await
                    .map_err(ReconcileError::tree(&ro.key, "delete snapshot"))?;
            }
            ro.ctx
                .store
                .delete_revision(&ro.uid, rev.revision)
                .await
                .map_err(store_err(&ro.key, "delete revision"))?;
        }
        Ok(())
    }

    /// Deletes the data snapshots of a Container being deleted (its rows go with the object).
    pub(super) async fn drop_snapshots(
        &self,
        ctx: &Context,
        key: &ObjectKey,
        uid: &str,
    ) -> Result<(), Error> {
        let Some(d) = &self.snapshots else {
            return Ok(());
        };
        let revs = ctx
            .store
            .revisions(uid)
            .await
            .map_err(store_err(key, "revisions"))?;
        for tree in revs.iter().filter_map(|r| r.snapshot.as_deref()) {
            d.delete(TreeClass::Revisions, tree)
                .await
                .map_err(ReconcileError::tree(key, "delete snapshot"))?;
        }
        Ok(())
    }
}

/// Why generation `g` is not Ready after `secs`, from the status the last reconcile wrote.
fn not_ready_reason(st: &ContainerStatus, g: i64, secs: u64) -> String {
    let ready = st
        .common
        .condition("Ready")
        .filter(|c| c.observed_generation == g);
    match ready {
        Some(c) if !c.message.is_empty() => {
            format!("not Ready after {secs}s ({}: {})", c.reason, c.message)
        }
        Some(c) => format!("not Ready after {secs}s ({})", c.reason),
        None => format!("not Ready after {secs}s"),
    }
}
