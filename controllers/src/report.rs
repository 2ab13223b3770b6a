//! Reconcile errors are the object's, not only the log's: after a failure that persists, the
//! object shows `Ready=False` with reason `ReconcileError` and a Warning event with the error
//! (deduplicated by the store, so a failure that repeats is one event with a count) — unless
//! its controller already said why it is not Ready, in its own words.

use crate::context::Context;
use tend_schema::meta::{CommonStatus, ConditionStatus};
use tend_schema::store::EventType;
use tend_schema::ObjectKey;

/// The condition reason (and event reason) of an error no controller explained.
pub const REASON: &str = "ReconcileError";

/// Failures in a row before the object shows the error: a one-off conflict or busy store that
/// the next try resolves is not worth a condition flip.
pub const AFTER_FAILURES: u32 = 3;

/// Longest message kept on the object.
const MAX_MESSAGE: usize = 1024;

/// Shows `error` on `key`'s object. Best effort: a failure here is logged, never returned
/// (the reconcile's own error is already being retried).
pub(crate) async fn show(ctx: &Context, key: &ObjectKey, error: &str) {
    let Ok(Some(obj)) = ctx.get(key).await else {
        return;
    };
    let mut message: String = error.chars().take(MAX_MESSAGE).collect();
    if message.len() < error.len() {
        message.push('…');
    }
    let mut status = obj.status.clone();
    let mut common: CommonStatus = serde_json::from_value(status.clone()).unwrap_or_default();
    // A controller that already explained why it is not Ready (its own condition and event)
    // keeps its own words.
    let explained = common
        .condition("Ready")
        .is_some_and(|c| c.status != ConditionStatus::True && c.reason != REASON);
    if explained {
        return;
    }
    ctx.event(&obj, EventType::Warning, REASON, message.clone())
        .await;
    let generation = obj.metadata.generation;
    if !common.set_condition(
        "Ready",
        ConditionStatus::False,
        REASON,
        &message,
        generation,
    ) {
        return;
    }
    if !status.is_object() {
        status = serde_json::json!({});
    }
    status["conditions"] = serde_json::to_value(&common.conditions).unwrap_or_default();
    if let Err(e) = ctx.write_status(&obj, &status).await {
        tracing::debug!(object = %key, error = %e, "could not show the reconcile error");
    }
}
