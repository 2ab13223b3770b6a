//! `tend apply --wait`: every applied object's Ready, followed over one watch in one process.
//!
//! The objects are read once (one list, one revision) and every change after that revision is
//! followed: no polling. The wait ends with success when each object has `Ready=True` for its
//! current generation, and with failure at once when one has failed for good (phase Failed or
//! Succeeded, or Ready=False with a reason that says it cannot start) or when the timeout passes.

use super::backend::Backend;
use futures::StreamExt;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tend_schema::meta::{CommonStatus, ConditionStatus};
use tend_schema::store::ChangeType;
use tend_schema::{AnyObject, Kind, ObjectKey};

/// Ready=False reasons that mean the object will not become Ready without a change of spec or
/// host (a restart loop, a start that failed, a refusal): the wait fails at once on them.
const FAILED_REASONS: [&str; 6] = [
    "StartFailed",
    "CrashLoopBackOff",
    "ImagePullFailed",
    "DigestMismatch",
    "Forbidden",
    "PortConflict",
];

/// Where one object stands.
#[derive(Debug, Clone, PartialEq)]
enum Standing {
    Ready,
    Waiting(String),
    Failed(String),
}

fn standing(obj: Option<&AnyObject>) -> Standing {
    let Some(obj) = obj else {
        return Standing::Failed("deleted while waiting".into());
    };
    if obj.metadata.is_terminating() {
        return Standing::Failed("being deleted".into());
    }
    let st: CommonStatus = serde_json::from_value(obj.status.clone()).unwrap_or_default();
    let phase = st.phase.clone().unwrap_or_else(|| "-".into());
    let Some(c) = st.condition("Ready") else {
        return Standing::Waiting(format!("{phase}, no Ready condition yet"));
    };
    let current = c.observed_generation >= obj.metadata.generation;
    let said = format!(
        "{phase}, Ready={:?} ({}): {}",
        c.status, c.reason, c.message
    );
    match c.status {
        ConditionStatus::True if current => Standing::Ready,
        ConditionStatus::False
            if current
                && (FAILED_REASONS.contains(&c.reason.as_str())
                    || matches!(phase.as_str(), "Failed" | "Succeeded")) =>
        {
            Standing::Failed(said)
        }
        _ => Standing::Waiting(said),
    }
}

fn label(k: &ObjectKey) -> String {
    format!("{}/{}", k.kind.singular(), k.name)
}

/// Waits until every object in `keys` is Ready. With `print`, says so per object and at the
/// end; returns Err with the object and its condition when one fails or `timeout` passes.
pub async fn wait_ready(
    backend: &Backend,
    keys: &[ObjectKey],
    timeout: Duration,
    print: bool,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut kinds: Vec<Kind> = keys.iter().map(|k| k.kind).collect();
    kinds.sort_by_key(|k| k.as_str());
    kinds.dedup();
    let first_ns = keys.first().map(|k| k.namespace.clone());
    let ns = first_ns.filter(|n| keys.iter().all(|k| k.namespace == *n));
    // One list per kind (each at its own revision); the watch starts at the oldest of them, and
    // a change no newer than what an object's list showed is skipped.
    let mut items = Vec::new();
    let mut from = u64::MAX;
    for kind in &kinds {
        let list = backend.list(Some(*kind), ns.as_deref(), "", None).await?;
        from = from.min(list.revision);
        items.extend(list.items);
    }
    let mut state: BTreeMap<ObjectKey, Standing> = BTreeMap::new();
    let mut seen: BTreeMap<ObjectKey, u64> = BTreeMap::new();
    for k in keys {
        let obj = items.iter().find(|o| o.key().ok().as_ref() == Some(k));
        state.insert(k.clone(), standing(obj));
        seen.insert(
            k.clone(),
            obj.and_then(|o| o.metadata.revision()).unwrap_or(0),
        );
    }
    let mut stream = backend.watch(&kinds, ns.as_deref(), from).await?;
    loop {
        if let Some((k, why)) = state.iter().find_map(|(k, s)| match s {
            Standing::Failed(why) => Some((k, why)),
            _ => None,
        }) {
            anyhow::bail!("{} failed: {why}", label(k));
        }
        let waiting: Vec<(&ObjectKey, &String)> = state
            .iter()
            .filter_map(|(k, s)| match s {
                Standing::Waiting(why) => Some((k, why)),
                _ => None,
            })
            .collect();
        if waiting.is_empty() {
            if !print {
                return Ok(());
            }
            println!(
                "{} object(s) Ready after {:.3}s",
                keys.len(),
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        let change = match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => {
                let (k, why) = waiting[0];
                anyhow::bail!(
                    "timed out after {:?} waiting for {} object(s) to be Ready; {}: {why}",
                    timeout,
                    waiting.len(),
                    label(k)
                );
            }
            Ok(None) => anyhow::bail!("the watch ended before every object was Ready"),
            Ok(Some(c)) => c?,
        };
        let Ok(k) = change.object.key() else { continue };
        let Some(old) = state.get(&k) else { continue };
        let rev = change.object.metadata.revision().unwrap_or(u64::MAX);
        if change.type_ != ChangeType::Deleted && rev <= seen.get(&k).copied().unwrap_or(0) {
            continue; // older than what the list showed
        }
        seen.insert(k.clone(), rev);
        let obj = (change.type_ != ChangeType::Deleted).then_some(&change.object);
        let new = standing(obj);
        if print && new == Standing::Ready && *old != Standing::Ready {
            println!("{} Ready", label(&k));
        }
        state.insert(k, new);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn with(status: serde_json::Value) -> AnyObject {
        let mut o = AnyObject::new(Kind::Container, "default", "web", json!({}));
        o.metadata.generation = 2;
        o.status = status;
        o
    }

    fn cond(status: &str, reason: &str, gen: i64) -> serde_json::Value {
        json!({"phase": "Running", "conditions": [{"type": "Ready", "status": status, "reason": reason,
            "message": "m", "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": gen}]})
    }

    #[test]
    fn ready_only_for_the_current_generation_and_failures_are_final() {
        assert_eq!(
            standing(Some(&with(cond("True", "Running", 2)))),
            Standing::Ready
        );
        assert!(matches!(
            standing(Some(&with(cond("True", "Running", 1)))),
            Standing::Waiting(_)
        ));
        assert!(matches!(
            standing(Some(&with(cond("False", "Starting", 2)))),
            Standing::Waiting(_)
        ));
        let failed = standing(Some(&with(cond("False", "CrashLoopBackOff", 2))));
        assert!(
            matches!(&failed, Standing::Failed(m) if m.contains("CrashLoopBackOff")),
            "{failed:?}"
        );
        assert!(matches!(standing(None), Standing::Failed(_)));
    }
}
