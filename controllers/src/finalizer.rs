//! Finalizers: a controller's promise to tear its host objects down before a row goes.

use crate::action::{Action, Error};
use crate::context::Context;
use std::future::Future;
use tend_schema::{AnyObject, ObjectKey};

/// What the closure passed to [`finalizer`] is asked to do.
pub enum Event {
    /// Make the host match the object. The finalizer is already on the object.
    Apply(AnyObject),
    /// The object is being deleted: tear its host objects down.
    Cleanup(AnyObject),
}

/// The result of a cleanup.
pub enum Cleanup {
    /// Everything is gone; the finalizer may be removed.
    Done,
    /// Not yet (e.g. the object is still in use); look again as the action says.
    Wait(Action),
}

/// Runs one reconcile of `key` under finalizer `name`.
///
/// # Guarantees
/// - The finalizer is on the object before `Apply` runs, so any host object created during
///   `Apply` will get a `Cleanup` before the row can go.
/// - `Cleanup` runs only for objects being deleted that still carry the finalizer; the
///   finalizer is removed only after `Cleanup` returned `Done`.
/// - A deleted object whose finalizer is already gone is left alone.
///
/// # Assumptions
/// `Apply` and `Cleanup` must both be idempotent: a crash between the host change and the
/// finalizer update runs them again.
///
/// # Errors
/// Errors from the closure and from the store are returned unchanged, for the error policy.
pub async fn finalizer<F, Fut>(
    ctx: &Context,
    name: &str,
    key: &ObjectKey,
    f: F,
) -> Result<Action, Error>
where
    F: FnOnce(Event) -> Fut,
    Fut: Future<Output = Result<FinalizerOutcome, Error>>,
{
    let Some(obj) = ctx.get(key).await? else {
        return Ok(Action::await_change());
    };
    if !obj.metadata.is_terminating() {
        let obj = if obj.metadata.has_finalizer(name) {
            obj
        } else {
            ctx.store.add_finalizer(key, name).await?
        };
        return match f(Event::Apply(obj)).await? {
            FinalizerOutcome::Action(a) => Ok(a),
            FinalizerOutcome::Cleanup(_) => Ok(Action::await_change()),
        };
    }
    if !obj.metadata.has_finalizer(name) {
        return Ok(Action::await_change());
    }
    match f(Event::Cleanup(obj)).await? {
        FinalizerOutcome::Cleanup(Cleanup::Done) => {
            ctx.store.remove_finalizer(key, name).await?;
            Ok(Action::await_change())
        }
        FinalizerOutcome::Cleanup(Cleanup::Wait(a)) | FinalizerOutcome::Action(a) => Ok(a),
    }
}

/// What the closure returns: an action after `Apply`, a cleanup result after `Cleanup`.
pub enum FinalizerOutcome {
    Action(Action),
    Cleanup(Cleanup),
}

impl From<Action> for FinalizerOutcome {
    fn from(a: Action) -> Self {
        FinalizerOutcome::Action(a)
    }
}

impl From<Cleanup> for FinalizerOutcome {
    fn from(c: Cleanup) -> Self {
        FinalizerOutcome::Cleanup(c)
    }
}

/// The objects that still use `key` by name; while any exist, a State or Sandbox stays
/// Terminating (in-use protection, like Kubernetes' pvc-protection).
pub fn users(ctx: &Context, key: &ObjectKey) -> Vec<ObjectKey> {
    ctx.index.referrers(key)
}
