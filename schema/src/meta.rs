//! Kubernetes-shaped object metadata, owner references and conditions.

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Timestamps are UTC, RFC 3339 on the wire.
pub type Time = DateTime<Utc>;

/// Now, truncated to whole seconds as Kubernetes does, so that comparisons after a round trip
/// through JSON are exact.
pub fn now() -> Time {
    Utc::now().trunc_subsecs(0)
}

/// Standard object metadata. Fields the server owns (uid, generation, resourceVersion,
/// creationTimestamp, deletionTimestamp) are ignored when a user sends them on create.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<Time>,
    /// Set with deletionTimestamp when the delete asked for one: how long the workload gets
    /// between SIGTERM and SIGKILL (overrides the spec's own grace). Server-owned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_grace_period_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finalizers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owner_references: Vec<OwnerReference>,
    /// Kept for Kubernetes clients that echo it back; tend does not interpret it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_fields: Option<serde_json::Value>,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

impl ObjectMeta {
    /// The namespace, defaulted.
    pub fn ns(&self) -> &str {
        self.namespace
            .as_deref()
            .unwrap_or(crate::DEFAULT_NAMESPACE)
    }

    /// resourceVersion as the store's revision number, if set and numeric.
    pub fn revision(&self) -> Option<u64> {
        self.resource_version
            .as_deref()
            .and_then(|v| v.parse().ok())
    }

    pub fn is_terminating(&self) -> bool {
        self.deletion_timestamp.is_some()
    }

    pub fn has_finalizer(&self, f: &str) -> bool {
        self.finalizers.iter().any(|x| x == f)
    }
}

/// A reference from a dependent to its owner, by kind, name and uid (same namespace).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OwnerReference {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_owner_deletion: Option<bool>,
}

/// True, False or Unknown, as in Kubernetes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

/// One observed aspect of an object (`Ready`, `Prepared`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: ConditionStatus,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub message: String,
    pub last_transition_time: Time,
    #[serde(default)]
    pub observed_generation: i64,
}

/// Status fields every kind shares: phase, observedGeneration, conditions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommonStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub observed_generation: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

impl CommonStatus {
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    /// Sets a condition. `lastTransitionTime` moves only when `status` flips; reason, message and
    /// observedGeneration are always updated. Returns true when anything changed.
    pub fn set_condition(
        &mut self,
        type_: &str,
        status: ConditionStatus,
        reason: &str,
        message: &str,
        generation: i64,
    ) -> bool {
        match self.conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c) => {
                let before = c.clone();
                if c.status != status {
                    c.status = status;
                    c.last_transition_time = now();
                }
                c.reason = reason.to_string();
                c.message = message.to_string();
                c.observed_generation = generation;
                *c != before
            }
            None => {
                self.conditions.push(Condition {
                    type_: type_.to_string(),
                    status,
                    reason: reason.to_string(),
                    message: message.to_string(),
                    last_transition_time: now(),
                    observed_generation: generation,
                });
                true
            }
        }
    }

    /// True when the Ready condition is True for the given generation.
    pub fn is_ready(&self, generation: i64) -> bool {
        self.condition("Ready").is_some_and(|c| {
            c.status == ConditionStatus::True && c.observed_generation >= generation
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_on_flip() {
        let mut s = CommonStatus::default();
        assert!(s.set_condition("Ready", ConditionStatus::False, "Waiting", "a", 1));
        let t0 = s.condition("Ready").unwrap().last_transition_time - chrono::Duration::seconds(5);
        s.conditions[0].last_transition_time = t0;
        assert!(s.set_condition("Ready", ConditionStatus::False, "Waiting", "b", 1));
        assert_eq!(s.condition("Ready").unwrap().last_transition_time, t0);
        assert!(!s.set_condition("Ready", ConditionStatus::False, "Waiting", "b", 1));
        assert!(s.set_condition("Ready", ConditionStatus::True, "Done", "", 2));
        assert_ne!(s.condition("Ready").unwrap().last_transition_time, t0);
        assert!(s.is_ready(2));
        assert!(!s.is_ready(3));
    }

    #[test]
    fn unknown_metadata_field_is_refused() {
        let err = serde_json::from_str::<ObjectMeta>(r#"{"name":"a","nmae":"b"}"#).unwrap_err();
        assert!(err.to_string().contains("nmae"));
    }
}
