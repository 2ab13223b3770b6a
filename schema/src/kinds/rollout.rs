//! How a Container moves from one spec to the next: `spec.updateStrategy`, and what the status
//! keeps of a rollout in progress (its step, so a restarted daemon resumes it) and of the last
//! rollback.

use crate::field::FieldErrors;
use crate::meta::Time;
use serde::{Deserialize, Serialize};

/// Kept revisions when `revisionHistoryLimit` is not set.
pub const DEFAULT_HISTORY_LIMIT: u32 = 5;
/// Time a new revision has to become Ready when `progressDeadlineSeconds` is not set.
pub const DEFAULT_PROGRESS_DEADLINE_SECONDS: u32 = 600;

/// `spec.updateStrategy`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateStrategy {
    #[serde(default, rename = "type")]
    pub type_: StrategyType,
    /// The new revision must be Ready within this many seconds, else it is rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline_seconds: Option<u32>,
    /// Snapshot the container's own Sandbox before the update; restore it on rollback.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub snapshot_data: bool,
    /// How many revisions (and their data snapshots) are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_history_limit: Option<u32>,
}

/// `Recreate` stops the old workload and starts the new one; `Rollout` gates the new one on
/// Ready and rolls back when it is not Ready in time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum StrategyType {
    #[default]
    Recreate,
    Rollout,
}

impl UpdateStrategy {
    pub fn history_limit(&self) -> u32 {
        self.revision_history_limit.unwrap_or(DEFAULT_HISTORY_LIMIT)
    }

    pub fn progress_deadline(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(
            self.progress_deadline_seconds
                .unwrap_or(DEFAULT_PROGRESS_DEADLINE_SECONDS),
        ))
    }

    /// `has_sandbox`: the spec's rootfs is a Sandbox (named or owned) the snapshot can take.
    pub fn validate(&self, has_sandbox: bool, errs: &mut FieldErrors) {
        if let Some(d) = self.progress_deadline_seconds {
            if !(1..=86_400).contains(&d) {
                errs.push(
                    "spec.updateStrategy.progressDeadlineSeconds",
                    format!("{d} is not in 1..86400"),
                );
            }
        }
        if let Some(l) = self.revision_history_limit {
            if !(1..=100).contains(&l) {
                errs.push(
                    "spec.updateStrategy.revisionHistoryLimit",
                    format!("{l} is not in 1..100"),
                );
            }
        }
        if self.snapshot_data && self.type_ != StrategyType::Rollout {
            errs.push(
                "spec.updateStrategy.snapshotData",
                "needs type: Rollout (Recreate keeps no data snapshot)",
            );
        }
        if self.snapshot_data && !has_sandbox {
            errs.push(
                "spec.updateStrategy.snapshotData",
                "needs spec.rootfs (a Sandbox or a State): there is no data of the container's own to snapshot",
            );
        }
        if self.progress_deadline_seconds.is_some() && self.type_ != StrategyType::Rollout {
            errs.push(
                "spec.updateStrategy.progressDeadlineSeconds",
                "is only used by type: Rollout",
            );
        }
    }
}

/// Where a rollout stands; written before each step is carried out, so a daemon killed in the
/// middle resumes from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RolloutStep {
    /// The old workload is being stopped and (with `snapshotData`) its data snapshotted.
    Snapshotting,
    /// (`rollout undo --data`) the Sandbox is being restored to the target revision's data.
    RestoringTarget,
    /// The new revision runs (or is being started) and must become Ready before the deadline.
    Progressing,
    /// The new revision failed: it is being stopped and the data restored from the snapshot.
    RollingBack,
}

/// `status.rollout`: a rollout in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    pub step: RolloutStep,
    pub from_revision: u64,
    pub from_generation: i64,
    pub to_revision: u64,
    pub to_generation: i64,
    /// The tree holding the data as `fromRevision` left it (with `snapshotData`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// When `Progressing` gives up (set on entering it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Time>,
    /// Why the new revision was rolled back (set on entering `RollingBack`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Set when the rollout is for new image content of the rootfs State (same revision, new
    /// digest), not for a new spec: the Sandbox is refreshed from the State in
    /// `RestoringTarget`, and rolling back restores the snapshot of the old content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageUpdate>,
}

/// `status.rollout.image`: the image digests a content rollout goes between.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageUpdate {
    /// The State the rootfs comes from.
    pub state: String,
    /// The digest the workload ran before.
    pub from: String,
    /// The digest the State holds now.
    pub to: String,
}

/// `status.rolledBack`: the user's generation that was rolled back, and what runs instead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolledBack {
    /// The generation (the user's spec) that failed.
    pub generation: i64,
    /// The revision running instead.
    pub revision: u64,
    pub reason: String,
    /// For a rolled-back image update: the digest that failed. The old content keeps running
    /// until the State's digest moves again or the spec changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
}
