//! The snapshot driver seam the State and Sandbox controllers call, a recording fake, and the
//! sweep that removes trees no object owns.
//!
//! Trees are addressed by class and object uid only; the driver derives every path itself.

use async_trait::async_trait;
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tend_schema::store::{ListQuery, Store};
use tend_schema::Kind;
use tokio::time::Instant;

/// Which family a tree belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TreeClass {
    /// Read-only trees of States.
    States,
    /// Writable trees of Sandboxes.
    Sandboxes,
    /// Read-only snapshots of a Container's Sandbox taken by a rollout, named
    /// `<container-uid>-<revision>` (the revision whose data they hold).
    Revisions,
}

impl TreeClass {
    /// Both classes, for start-up sweeps.
    pub const ALL: [TreeClass; 3] = [
        TreeClass::States,
        TreeClass::Sandboxes,
        TreeClass::Revisions,
    ];

    /// The class's directory name under a snapshot backend's root.
    pub fn dir_name(self) -> &'static str {
        match self {
            TreeClass::States => "states",
            TreeClass::Sandboxes => "sandboxes",
            TreeClass::Revisions => "revisions",
        }
    }

    /// The kind whose objects own trees of this class.
    pub fn kind(self) -> Kind {
        match self {
            TreeClass::States => Kind::State,
            TreeClass::Sandboxes => Kind::Sandbox,
            TreeClass::Revisions => Kind::Container,
        }
    }

    /// The uid of the object that owns tree `id` of this class (a revision tree's id starts
    /// with its Container's uid).
    pub fn owner_uid(self, id: &str) -> &str {
        match self {
            TreeClass::Revisions => id.rsplit_once('-').map_or(id, |(uid, _)| uid),
            _ => id,
        }
    }

    /// The tree id of the data snapshot of a Container's revision.
    pub fn revision_tree(container_uid: &str, revision: u64) -> String {
        format!("{container_uid}-{revision}")
    }
}

/// Where an import reads from (a host path the user named; the driver checks it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImportSource {
    /// A host directory.
    Directory(PathBuf),
    /// A `.tar` or `.tar.gz` file.
    Tarball(PathBuf),
    /// Image layer blobs (tar, gzip or zstd), bottom first, verified and owned by tend: applied
    /// in order with OCI whiteouts.
    Layers(Vec<PathBuf>),
}

/// What the driver reports about one tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeInfo {
    /// Absolute path of the tree.
    pub path: PathBuf,
    /// Whether the tree refuses writes.
    pub read_only: bool,
    /// Apparent size in bytes; 0 when not measured (snapshots).
    pub size_bytes: u64,
}

/// Errors from a snapshot driver, classified so the controllers can pick a condition reason.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TreeError {
    /// The source path does not exist.
    #[error("source {path} not found")]
    SourceNotFound {
        /// The source path.
        path: PathBuf,
    },
    /// The source exists but cannot be used (wrong type, inside tend's state dir, ...).
    #[error("bad source {path}: {reason}")]
    BadSource {
        /// The source path.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The tarball is not one, or holds unsafe entries.
    #[error("bad tarball {path}: {reason}")]
    BadTarball {
        /// The tarball path.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A tree that had to exist does not.
    #[error("tree {path} does not exist")]
    NotFound {
        /// The tree path.
        path: PathBuf,
    },
    /// The target tree already exists.
    #[error("tree {path} already exists")]
    Exists {
        /// The tree path.
        path: PathBuf,
    },
    /// An image layer that cannot be applied safely (an entry leaving the tree, ...).
    #[error("bad layer {path}: {reason}")]
    BadLayer {
        /// The layer blob.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Anything else (I/O, ioctl, btrfs), with the driver's message.
    #[error("{0}")]
    Other(String),
}

/// Why a State or Sandbox reconcile failed (boxed into [`crate::Error`] for the error policy).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The stored object does not decode as its kind.
    #[error("{key}: cannot decode: {source}")]
    Decode {
        /// The object.
        key: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
    /// The object has no uid (it bypassed the store).
    #[error("{key}: object has no uid")]
    NoUid {
        /// The object.
        key: String,
    },
    /// A driver call failed.
    #[error("{key}: {op}: {source}")]
    Tree {
        /// The object.
        key: String,
        /// What was being done (`import`, `snapshot`, `delete`, ...).
        op: &'static str,
        /// The driver error.
        #[source]
        source: TreeError,
    },
}

impl ReconcileError {
    /// A closure for `map_err` around a driver call.
    pub fn tree(key: &tend_schema::ObjectKey, op: &'static str) -> impl FnOnce(TreeError) -> Self {
        let key = key.to_string();
        move |source| ReconcileError::Tree { key, op, source }
    }
}

/// The operations the controllers need from a snapshot backend. Implementations must be
/// atomic where the docs say so and idempotent for `delete`.
#[async_trait]
pub trait SnapshotDriver: Send + Sync + 'static {
    /// `btrfs` or `copy`, as written to `status.backend`.
    fn backend(&self) -> &'static str;
    /// Where the tree `(class, uid)` lives, whether or not it exists.
    fn path(&self, class: TreeClass, uid: &str) -> PathBuf;
    /// Imports a host directory or tarball as the read-only State tree `uid`; atomic.
    async fn import(&self, uid: &str, source: &ImportSource) -> Result<TreeInfo, TreeError>;
    /// Snapshots one tree into a new one (read-only or writable); atomic.
    async fn snapshot(
        &self,
        src: (TreeClass, &str),
        dst: (TreeClass, &str),
        read_only: bool,
    ) -> Result<TreeInfo, TreeError>;
    /// Whether the tree exists and, if so, whether it is read-only. Cheap: never walks.
    async fn stat(&self, class: TreeClass, uid: &str) -> Result<Option<bool>, TreeError>;
    /// Path, flag and size (walks the tree).
    async fn inspect(&self, class: TreeClass, uid: &str) -> Result<Option<TreeInfo>, TreeError>;
    /// Sets or clears the read-only flag.
    async fn set_read_only(&self, class: TreeClass, uid: &str, ro: bool) -> Result<(), TreeError>;
    /// Replaces the content of the writable tree `dst` with a writable copy of `src`.
    ///
    /// # Guarantees
    /// Atomic: `dst` shows its old content or all of `src`'s, never a mix, even if the process
    /// dies part-way (the copy is built under a temp name and exchanged in with one rename;
    /// the old content goes to a temp name that `remove_stale_temps` clears).
    async fn restore(
        &self,
        src: (TreeClass, &str),
        dst: (TreeClass, &str),
    ) -> Result<TreeInfo, TreeError>;
    /// Deletes a tree; Ok(false) when it was already gone.
    async fn delete(&self, class: TreeClass, uid: &str) -> Result<bool, TreeError>;
    /// The complete trees of a class (temp names skipped).
    async fn list(&self, class: TreeClass) -> Result<Vec<String>, TreeError>;
    /// Removes half-made trees left by a crash; returns their paths.
    async fn remove_stale_temps(&self, class: TreeClass) -> Result<Vec<PathBuf>, TreeError>;
}

/// Removes trees that no object of the class's kind owns, once they have been seen unowned
/// for the whole grace period (a tree being created right now always has its object first).
pub struct Sweeper {
    driver: Arc<dyn SnapshotDriver>,
    store: Arc<dyn Store>,
    grace: Duration,
    seen: Mutex<HashMap<(TreeClass, String), Instant>>,
}

impl Sweeper {
    /// A sweeper over `driver`'s trees, checking ownership against `store`.
    pub fn new(driver: Arc<dyn SnapshotDriver>, store: Arc<dyn Store>, grace: Duration) -> Self {
        Self {
            driver,
            store,
            grace,
            seen: Mutex::default(),
        }
    }

    /// One pass over both classes; returns the trees removed. Reads ownership from the store
    /// (never the index, which may not be primed yet).
    pub async fn sweep(&self) -> Result<Vec<(TreeClass, String)>, crate::Error> {
        let mut removed = Vec::new();
        for class in TreeClass::ALL {
            let trees = self.driver.list(class).await?;
            let q = ListQuery {
                kind: Some(class.kind()),
                ..Default::default()
            };
            let owned: BTreeSet<String> = self
                .store
                .list(&q)
                .await?
                .items
                .into_iter()
                .filter_map(|o| o.metadata.uid)
                .collect();
            let now = Instant::now();
            let mut due = Vec::new();
            {
                let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
                let unowned = |id: &String| !owned.contains(class.owner_uid(id));
                seen.retain(|(c, id), _| *c != class || (trees.contains(id) && unowned(id)));
                for id in trees.iter().filter(|id| unowned(id)) {
                    let first = *seen.entry((class, id.clone())).or_insert(now);
                    if now.duration_since(first) >= self.grace {
                        due.push(id.clone());
                    }
                }
            }
            for id in due {
                tracing::warn!(?class, tree = %id, "removing a tree no object owns");
                self.driver.delete(class, &id).await?;
                self.seen
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&(class, id.clone()));
                removed.push((class, id));
            }
        }
        Ok(removed)
    }

    /// Sweeps every `every` until the task is dropped; errors are logged.
    pub async fn run(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.sweep().await {
                tracing::warn!(error = %e, "orphan tree sweep failed");
            }
        }
    }
}

pub mod fake;

#[cfg(test)]
mod tests;

/// Decodes a State or Sandbox into its typed form and its uid (trees are named by uid).
pub(crate) fn decode<S, T>(
    key: &tend_schema::ObjectKey,
    obj: &tend_schema::AnyObject,
) -> Result<(tend_schema::Object<S, T>, String), ReconcileError>
where
    S: serde::de::DeserializeOwned,
    T: serde::de::DeserializeOwned + Default,
{
    let typed = obj.typed().map_err(|source| ReconcileError::Decode {
        key: key.to_string(),
        source,
    })?;
    let uid = obj.metadata.uid.clone().ok_or(ReconcileError::NoUid {
        key: key.to_string(),
    })?;
    Ok((typed, uid))
}

/// The start-up observation shared by the State and Sandbox controllers: drop half-made trees
/// left by a crash mid-import, then look at every tree of the class.
pub(crate) async fn observe_class(
    driver: &dyn SnapshotDriver,
    class: TreeClass,
) -> Result<(), crate::Error> {
    let removed = driver.remove_stale_temps(class).await?;
    let trees = driver.list(class).await?;
    tracing::info!(
        backend = driver.backend(),
        ?class,
        trees = trees.len(),
        stale_temps_removed = removed.len(),
        "observed host trees"
    );
    Ok(())
}
