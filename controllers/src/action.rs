//! What a reconcile returns: when to look again, or an error for the error policy.

use std::time::Duration;

/// A reconciler's error. Reconcilers keep their own `thiserror` enums and box them here.
pub type Error = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What the runtime should do with the key after a successful reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Action {
    requeue_after: Option<Duration>,
}

impl Action {
    /// Look again after `d` even if nothing changes (e.g. waiting out a restart backoff).
    pub fn requeue(d: Duration) -> Self {
        Self {
            requeue_after: Some(d),
        }
    }

    /// Nothing to do until something changes (a store event, a driver event, or resync).
    pub fn await_change() -> Self {
        Self {
            requeue_after: None,
        }
    }

    pub fn requeue_after(&self) -> Option<Duration> {
        self.requeue_after
    }
}
