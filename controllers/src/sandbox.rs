//! The Sandbox controller: a writable snapshot of a Ready State, named by the Sandbox's uid;
//! recreated (with a Warning) when deleted behind tend's back; protected while in use.

use crate::action::{Action, Error};
use crate::context::Context;
use crate::controller::Reconciler;
use crate::finalizer::{self, finalizer, Cleanup, Event};
use crate::snapshot::{ReconcileError, SnapshotDriver, TreeClass};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;
use tend_schema::kinds::{SandboxSpec, SandboxStatus, StateSpec, StateStatus};
use tend_schema::store::EventType;
use tend_schema::{AnyObject, ConditionStatus, Kind, Object, ObjectKey};

/// The finalizer the Sandbox controller puts on every Sandbox.
pub const FINALIZER: &str = "tend.dev/sandbox";

type Sandbox = Object<SandboxSpec, SandboxStatus>;

/// Reconciles Sandboxes over a [`SnapshotDriver`].
pub struct SandboxReconciler {
    /// The snapshot backend.
    pub driver: Arc<dyn SnapshotDriver>,
}

#[async_trait]
impl Reconciler for SandboxReconciler {
    fn kind(&self) -> Kind {
        Kind::Sandbox
    }

    async fn observe(&self, _ctx: &Context) -> Result<(), Error> {
        crate::snapshot::observe_class(&*self.driver, TreeClass::Sandboxes).await
    }

    async fn reconcile(&self, ctx: &Context, key: &ObjectKey) -> Result<Action, Error> {
        finalizer(ctx, FINALIZER, key, |ev| async move {
            match ev {
                Event::Apply(obj) => self.apply(ctx, key, obj).await.map(Into::into),
                Event::Cleanup(obj) => self.cleanup(ctx, key, obj).await.map(Into::into),
            }
        })
        .await
    }
}

fn decode(key: &ObjectKey, obj: &AnyObject) -> Result<(Sandbox, String), ReconcileError> {
    crate::snapshot::decode(key, obj)
}

impl SandboxReconciler {
    async fn apply(&self, ctx: &Context, key: &ObjectKey, obj: AnyObject) -> Result<Action, Error> {
        let (sb, uid) = decode(key, &obj)?;
        let gen = obj.metadata.generation;
        let mut status = sb.status.clone();
        let d = &self.driver;
        match d
            .stat(TreeClass::Sandboxes, &uid)
            .await
            .map_err(ReconcileError::tree(key, "stat"))?
        {
            Some(false) => {}
            Some(true) => {
                d.set_read_only(TreeClass::Sandboxes, &uid, false)
                    .await
                    .map_err(ReconcileError::tree(key, "set writable"))?;
                ctx.drift_repaired();
                ctx.event(
                    &obj,
                    EventType::Warning,
                    "DriftRepaired",
                    "the sandbox was made read-only behind tend's back; it is writable again",
                )
                .await;
            }
            None => {
                let name = &sb.spec.state;
                let skey = ObjectKey::new(Kind::State, &key.namespace, name);
                let state = match ctx.get(&skey).await? {
                    None => Err(format!("State {name:?} does not exist")),
                    Some(s) => {
                        let typed: Object<StateSpec, StateStatus> =
                            s.typed().map_err(|source| ReconcileError::Decode {
                                key: skey.to_string(),
                                source,
                            })?;
                        if typed.status.common.is_ready(s.metadata.generation) {
                            Ok(s.metadata.uid.clone().unwrap_or_default())
                        } else {
                            Err(format!("State {name:?} is not Ready"))
                        }
                    }
                };
                let suid = match state {
                    Ok(u) => u,
                    Err(msg) => {
                        status.common.phase = Some("Pending".into());
                        status.common.set_condition(
                            "Ready",
                            ConditionStatus::False,
                            "WaitingForState",
                            &msg,
                            gen,
                        );
                        status.common.observed_generation = gen;
                        ctx.write_status(&obj, &status).await?;
                        return Ok(Action::await_change());
                    }
                };
                d.snapshot(
                    (TreeClass::States, &suid),
                    (TreeClass::Sandboxes, &uid),
                    false,
                )
                .await
                .map_err(ReconcileError::tree(key, "snapshot"))?;
                if status.path.is_some() {
                    ctx.drift_repaired();
                    ctx.event(&obj, EventType::Warning, "Recreated", format!("the sandbox was deleted behind tend's back; recreated from State {name:?} — writes made in it are lost")).await;
                }
            }
        }
        status.path = Some(d.path(TreeClass::Sandboxes, &uid).display().to_string());
        status.backend = Some(d.backend().to_string());
        status.common.phase = Some("Ready".into());
        status
            .common
            .set_condition("Ready", ConditionStatus::True, "Snapshotted", "", gen);
        status.common.observed_generation = gen;
        ctx.write_status(&obj, &status).await?;
        Ok(Action::await_change())
    }

    async fn cleanup(
        &self,
        ctx: &Context,
        key: &ObjectKey,
        obj: AnyObject,
    ) -> Result<Cleanup, Error> {
        let (sb, uid) = decode(key, &obj)?;
        let mut users = Vec::new();
        for u in finalizer::users(ctx, key) {
            // A State frozen from this Sandbox no longer needs it once its tree is made.
            if u.kind == Kind::State {
                if let Some(s) = ctx.get(&u).await? {
                    let ready = s
                        .typed::<StateSpec, StateStatus>()
                        .is_ok_and(|t| t.status.path.is_some());
                    if ready {
                        continue;
                    }
                }
            }
            users.push(u);
        }
        let mut status = sb.status.clone();
        status.common.phase = Some("Terminating".into());
        if !users.is_empty() {
            let names: Vec<String> = users.iter().map(|u| u.to_string()).collect();
            let msg = format!(
                "in use by {}; delete them first, or delete with --cascade=foreground",
                names.join(", ")
            );
            status.common.set_condition(
                "Ready",
                ConditionStatus::False,
                "InUse",
                &msg,
                obj.metadata.generation,
            );
            ctx.write_status(&obj, &status).await?;
            // A freezing State's progress is a status change, which does not wake this key.
            let again = if users.iter().any(|u| u.kind == Kind::State) {
                Action::requeue(Duration::from_secs(2))
            } else {
                Action::await_change()
            };
            return Ok(Cleanup::Wait(again));
        }
        ctx.write_status(&obj, &status).await?;
        self.driver
            .delete(TreeClass::Sandboxes, &uid)
            .await
            .map_err(ReconcileError::tree(key, "delete"))?;
        Ok(Cleanup::Done)
    }
}
