//! What a reconciler gets besides its key: the store, the index, an event recorder, and a
//! status writer that writes only when something changed.

use crate::index::Index;
use crate::metrics::ControllerMetrics;
use serde::Serialize;
use std::sync::Arc;
use tend_schema::store::{EventType, NewEvent, Store, StoreError};
use tend_schema::{AnyObject, ObjectKey};

/// Shared by every reconcile of one controller.
#[derive(Clone)]
pub struct Context {
    pub store: Arc<dyn Store>,
    pub index: Arc<Index>,
    pub metrics: Arc<ControllerMetrics>,
}

impl Context {
    /// Records a Kubernetes-style event about `obj`; repeats are counted, not duplicated.
    /// Failures are logged, never returned: an event is not worth failing a reconcile for.
    pub async fn event(
        &self,
        obj: &AnyObject,
        type_: EventType,
        reason: &str,
        message: impl Into<String>,
    ) {
        let Ok(key) = obj.key() else { return };
        let message = message.into();
        match type_ {
            EventType::Warning => tracing::warn!(object = %key, reason, %message, "event"),
            EventType::Normal => tracing::info!(object = %key, reason, %message, "event"),
        }
        let ev = NewEvent {
            object: key,
            uid: obj.metadata.uid.clone().unwrap_or_default(),
            type_,
            reason: reason.to_string(),
            message,
        };
        if let Err(e) = self.store.record_event(ev).await {
            tracing::warn!(error = %e, "could not record event");
        }
    }

    /// Counts a repaired drift (something changed behind tend's back and was put back).
    pub fn drift_repaired(&self) {
        self.metrics.drift_repairs.inc();
    }

    /// Writes `status` for `obj` unless it equals what is stored. On a conflict (the object moved
    /// meanwhile) it re-reads and writes once more: status is derived from observation, so it
    /// is still true; a new generation will be reconciled again anyway.
    ///
    /// # Errors
    /// NotFound when the object went away; store errors otherwise.
    pub async fn write_status<S: Serialize>(
        &self,
        obj: &AnyObject,
        status: &S,
    ) -> Result<AnyObject, StoreError> {
        let value = serde_json::to_value(status).expect("statuses serialize");
        if value == obj.status {
            return Ok(obj.clone());
        }
        let key = obj.key().map_err(StoreError::Invalid)?;
        let rv = obj.metadata.revision().unwrap_or(0);
        match self.store.update_status(&key, rv, value.clone()).await {
            Err(StoreError::Conflict { .. }) => {
                let fresh = self.store.get(&key).await?;
                let rv = fresh.metadata.revision().unwrap_or(0);
                self.store.update_status(&key, rv, value).await
            }
            other => other,
        }
    }

    /// Reads an object; None when it does not exist.
    pub async fn get(&self, key: &ObjectKey) -> Result<Option<AnyObject>, StoreError> {
        match self.store.get(key).await {
            Ok(o) => Ok(Some(o)),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
