//! Owner garbage collection: background, foreground and orphan propagation.
//!
//! - **Background** (default): the owner goes at once; afterwards every object whose owners are
//!   all gone is deleted here.
//! - **Foreground**: the store puts `foregroundDeletion` on the owner; this collector deletes its
//!   dependents (foreground too) and removes the finalizer when none is left. Dependents are the
//!   objects it owns *and* the objects that use it by name, so `tend delete state base
//!   --cascade=foreground` takes the Sandboxes and Containers built on it along.
//! - **Orphan**: the store puts `orphan` on the owner; this collector removes the owner's
//!   reference from its dependents, then the finalizer.
//!
//! Name-users are never deleted by background or orphan deletion: in-use protection keeps the
//! used object Terminating until they go.

use crate::action::{Action, Error};
use crate::context::Context;
use crate::controller::Reconciler;
use crate::index::Index;
use crate::informer::Change;
use async_trait::async_trait;
use tend_schema::store::{
    DeleteOptions, Propagation, StoreError, FOREGROUND_FINALIZER, ORPHAN_FINALIZER,
};
use tend_schema::{Kind, ObjectKey};

/// The collector for one kind (one instance per kind, so each has its own queue).
pub struct GarbageCollector {
    pub kind: Kind,
}

fn dependents(ctx: &Context, key: &ObjectKey, uid: &str) -> Vec<ObjectKey> {
    let mut d = ctx.index.owned_by(uid);
    d.extend(ctx.index.referrers(key));
    d.sort();
    d.dedup();
    d
}

#[async_trait]
impl Reconciler for GarbageCollector {
    fn kind(&self) -> Kind {
        self.kind
    }

    fn name(&self) -> String {
        format!("gc-{}", self.kind.plural())
    }

    async fn reconcile(&self, ctx: &Context, key: &ObjectKey) -> Result<Action, Error> {
        let Some(obj) = ctx.get(key).await? else {
            return Ok(Action::await_change());
        };
        let uid = obj.metadata.uid.clone().unwrap_or_default();
        let m = &obj.metadata;
        if m.is_terminating() && m.has_finalizer(FOREGROUND_FINALIZER) {
            let deps = dependents(ctx, key, &uid);
            if deps.is_empty() {
                ctx.store
                    .remove_finalizer(key, FOREGROUND_FINALIZER)
                    .await?;
                return Ok(Action::await_change());
            }
            let opts = DeleteOptions {
                propagation: Propagation::Foreground,
                ..Default::default()
            };
            for d in deps {
                match ctx.store.delete(&d, &opts).await {
                    Ok(_) | Err(StoreError::NotFound(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            return Ok(Action::await_change());
        }
        if m.is_terminating() && m.has_finalizer(ORPHAN_FINALIZER) {
            for d in ctx.index.owned_by(&uid) {
                loop {
                    let Some(mut dep) = ctx.get(&d).await? else {
                        break;
                    };
                    dep.metadata.owner_references.retain(|o| o.uid != uid);
                    match ctx.store.update(dep).await {
                        Ok(_) | Err(StoreError::NotFound(_)) => break,
                        Err(StoreError::Conflict { .. }) => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            ctx.store.remove_finalizer(key, ORPHAN_FINALIZER).await?;
            return Ok(Action::await_change());
        }
        if !m.owner_references.is_empty() && !m.is_terminating() {
            let mut any_alive = false;
            for o in &m.owner_references {
                let Ok(kind) = o.kind.parse::<Kind>() else {
                    continue;
                };
                let owner = ObjectKey::new(kind, key.namespace.clone(), o.name.clone());
                if ctx
                    .get(&owner)
                    .await?
                    .is_some_and(|x| x.metadata.uid.as_deref() == Some(o.uid.as_str()))
                {
                    any_alive = true;
                }
            }
            if !any_alive {
                tracing::info!(object = %key, "owners are gone; deleting dependent");
                // Only the version we judged: if its owner references changed since (an orphan
                // pass removed them), the precondition fails and the object stays.
                let opts = DeleteOptions {
                    uid: Some(uid),
                    resource_version: m.resource_version.clone(),
                    ..Default::default()
                };
                match ctx.store.delete(key, &opts).await {
                    Ok(_)
                    | Err(StoreError::NotFound(_))
                    | Err(StoreError::Precondition { .. })
                    | Err(StoreError::Conflict { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(Action::await_change())
    }

    fn triggers(&self, change: &Change, index: &Index) -> Vec<ObjectKey> {
        let Change::Event {
            event,
            previous,
            current,
        } = change
        else {
            return index.keys(self.kind);
        };
        let Ok(key) = event.object.key() else {
            return vec![];
        };
        let mut out = Vec::new();
        let m = &event.object.metadata;
        let mine = |k: &ObjectKey| k.kind == self.kind;
        if mine(&key)
            && (!m.owner_references.is_empty()
                || m.finalizers
                    .iter()
                    .any(|f| f == FOREGROUND_FINALIZER || f == ORPHAN_FINALIZER))
        {
            out.push(key.clone());
        }
        let gone_or_going = current.as_ref().is_none_or(|c| c.terminating);
        if gone_or_going {
            let uid = previous
                .as_ref()
                .or(current.as_ref())
                .map(|e| e.uid.clone())
                .unwrap_or_default();
            out.extend(index.owned_by(&uid).into_iter().filter(mine));
        }
        // A foreground-deleting owner or used object waits for this one: wake it when this goes.
        if current.is_none() {
            if let Some(p) = previous {
                out.extend(p.refs.iter().filter(|k| mine(k)).cloned());
                out.extend(
                    p.owners
                        .iter()
                        .filter_map(|u| index.key_of_uid(u))
                        .filter(mine),
                );
            }
        }
        out.sort();
        out.dedup();
        out
    }
}
