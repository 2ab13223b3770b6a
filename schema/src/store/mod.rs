//! The store: desired state as rows, compare-and-swap writes, a gap-free change feed, events.
//!
//! [`Store`] is the seam: SQLite ([`SqliteStore`]) is the embedded backend; a PostgreSQL backend
//! (LISTEN/NOTIFY for the feed) would be a second implementation of the same trait.

mod events;
mod feed;
mod idranges;
mod leases;
mod migrate;
mod pool;
mod revisions;
mod sqlite;
mod txn;

pub use events::{Event, EventQuery, EventType, NewEvent};
pub use idranges::{IdPool, IdRange, IdRangeError};
pub use leases::{Lease, LeaseError, LeaseFilter, LeaseRequest};
pub use migrate::SCHEMA_VERSION;
pub use revisions::{Requester, Revision};
pub use sqlite::{OpenOptions, SqliteStore, Synchronous};

use crate::field::FieldErrors;
use crate::kinds::Kind;
use crate::object::{AnyObject, ObjectKey};
use crate::selector::Selector;
use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// What can go wrong in the store. Each variant maps to one HTTP status in the API.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(ObjectKey),
    #[error("{0} already exists")]
    AlreadyExists(ObjectKey),
    #[error("conflict on {key}: resourceVersion {given} is stale (current is {current}); read it again and retry")]
    Conflict {
        key: ObjectKey,
        given: String,
        current: u64,
    },
    #[error("precondition failed on {key}: {message}")]
    Precondition { key: ObjectKey, message: String },
    #[error("{0}")]
    Invalid(FieldErrors),
    #[error("watch from revision {requested} is too old: history before revision {compacted} was compacted; list again and watch from the list's revision")]
    TooOld { requested: u64, compacted: u64 },
    #[error("database {path} has schema version {found}, newer than this binary supports ({supported}); upgrade tend")]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("opening {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("corrupt row for {key}: {source}")]
    Corrupt {
        key: String,
        source: serde_json::Error,
    },
    #[error("connection pool: {0}")]
    Pool(String),
    /// An IPv4 lease could not be given (subnet full, fixed address unavailable).
    #[error("{0}")]
    Lease(#[from] LeaseError),
    /// No host uid/gid range is free for a user-namespaced Container.
    #[error("{0}")]
    IdRange(#[from] IdRangeError),
    #[error("watching {path} for changes: {source}")]
    Inotify { path: PathBuf, source: nix::Error },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl StoreError {
    /// True for SQLITE_BUSY/LOCKED: another writer held the lock past the busy timeout.
    pub fn is_busy(&self) -> bool {
        matches!(self, StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _))
            if matches!(e.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
    }
}

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// None lists every kind.
    pub kind: Option<Kind>,
    /// None lists every namespace.
    pub namespace: Option<String>,
    pub selector: Selector,
    /// Only the object with this name (Kubernetes' `metadata.name` field selector).
    pub name: Option<String>,
}

/// A consistent snapshot of a list and the revision it was taken at (watch from there).
#[derive(Debug, Clone)]
pub struct ObjectList {
    pub items: Vec<AnyObject>,
    pub revision: u64,
}

/// How dependents are treated when their owner is deleted (Kubernetes propagationPolicy).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Propagation {
    /// The owner goes now; the garbage collector removes dependents afterwards.
    #[default]
    Background,
    /// Dependents go first; the owner stays Terminating until they are gone.
    Foreground,
    /// Dependents are kept and lose their owner reference.
    Orphan,
}

impl std::str::FromStr for Propagation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "background" => Ok(Self::Background),
            "foreground" => Ok(Self::Foreground),
            "orphan" => Ok(Self::Orphan),
            _ => Err(format!(
                "{s:?} is not one of background, foreground, orphan"
            )),
        }
    }
}

/// Finalizer the store adds for `Propagation::Foreground` (Kubernetes' name).
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";
/// Finalizer the store adds for `Propagation::Orphan` (Kubernetes' name).
pub const ORPHAN_FINALIZER: &str = "orphan";

#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub propagation: Propagation,
    /// Refuse unless the object still has this uid.
    pub uid: Option<String>,
    /// Refuse unless the object is still at this resourceVersion.
    pub resource_version: Option<String>,
    /// SIGTERM-to-SIGKILL grace for the object's workload (0: SIGKILL now), recorded as
    /// `metadata.deletionGracePeriodSeconds`. A later delete may shorten it, never lengthen it.
    pub grace_period_seconds: Option<u32>,
}

/// Result of a delete: the row is gone, or it waits for finalizers.
#[derive(Debug, Clone)]
pub enum Deleted {
    Gone(AnyObject),
    Terminating(AnyObject),
}

/// What `apply` did to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Applied {
    Created,
    Configured,
    Unchanged,
}

/// The outcome of one document of an apply.
#[derive(Debug, Clone)]
pub struct ApplyResult {
    pub key: ObjectKey,
    pub action: Applied,
    pub object: AnyObject,
}

/// An apply that stopped part-way: `applied` were committed, `failed` (0-based index into the
/// input) was not, and nothing after it was tried.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct ApplyError {
    pub applied: Vec<ApplyResult>,
    pub failed: usize,
    /// The object that failed, when the failure was about one object.
    pub key: Option<ObjectKey>,
    #[source]
    pub error: Box<StoreError>,
}

/// One entry of the change feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ChangeType {
    Added,
    Modified,
    Deleted,
}

impl ChangeType {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeType::Added => "ADDED",
            ChangeType::Modified => "MODIFIED",
            ChangeType::Deleted => "DELETED",
        }
    }
}

/// A committed change: its revision, what happened, and the object right after it.
#[derive(Debug, Clone)]
pub struct WatchEvent {
    pub revision: u64,
    pub type_: ChangeType,
    pub kind: Kind,
    pub object: AnyObject,
}

pub type WatchStream = BoxStream<'static, Result<WatchEvent>>;

/// Desired state, behind one seam. Every write is atomic and compare-and-swap where it says so.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates an object; assigns uid, generation 1, resourceVersion, creationTimestamp.
    async fn create(&self, obj: AnyObject) -> Result<AnyObject>;

    async fn get(&self, key: &ObjectKey) -> Result<AnyObject>;

    async fn list(&self, query: &ListQuery) -> Result<ObjectList>;

    /// Replaces metadata (labels, annotations, finalizers, ownerReferences) and spec.
    /// `metadata.resourceVersion` must match the stored one (else `Conflict`); generation is
    /// bumped when the spec changed. Status is left as stored.
    async fn update(&self, obj: AnyObject) -> Result<AnyObject>;

    /// Replaces status only, compare-and-swap on `resource_version`; generation never moves.
    /// A status equal to the stored one writes nothing and returns the stored object.
    async fn update_status(
        &self,
        key: &ObjectKey,
        resource_version: u64,
        status: serde_json::Value,
    ) -> Result<AnyObject>;

    /// RFC 7386 JSON merge patch on the whole object (metadata and spec; status is ignored),
    /// applied atomically; validated like a create.
    async fn merge_patch(&self, key: &ObjectKey, patch: serde_json::Value) -> Result<AnyObject>;

    /// Creates or updates each object in order, in one transaction per call. Stops at the first
    /// failure, keeping what was applied before it. With `dry_run` nothing is committed.
    async fn apply(
        &self,
        objects: Vec<AnyObject>,
        dry_run: bool,
    ) -> std::result::Result<Vec<ApplyResult>, ApplyError>;

    /// Marks the object for deletion; the row goes once no finalizer is left.
    async fn delete(&self, key: &ObjectKey, opts: &DeleteOptions) -> Result<Deleted>;

    /// Adds a finalizer if absent. Refused (`Precondition`) on a Terminating object.
    async fn add_finalizer(&self, key: &ObjectKey, finalizer: &str) -> Result<AnyObject>;

    /// Removes a finalizer if present; returns `Deleted::Gone` when that released the row.
    async fn remove_finalizer(&self, key: &ObjectKey, finalizer: &str) -> Result<Deleted>;

    /// The last committed revision.
    async fn revision(&self) -> Result<u64>;

    /// Every change after `from`, in commit order, exactly once, then live changes.
    /// `TooOld` when `from` is below the compacted history.
    async fn watch(&self, from: u64) -> Result<WatchStream>;

    /// Records an event; a repeat of the same (object, type, reason, message) bumps its count.
    async fn record_event(&self, event: NewEvent) -> Result<()>;

    async fn list_events(&self, query: &EventQuery) -> Result<Vec<Event>>;

    /// The highest event revision ([`Event::id`]) so far; 0 with no events.
    async fn event_revision(&self) -> Result<i64>;

    /// Follows this process's event writes: the value is the revision of the last one recorded.
    /// `None` where the backend cannot tell (a reader then re-reads on its own schedule).
    fn event_writes(&self) -> Option<tokio::sync::watch::Receiver<i64>> {
        None
    }

    /// Leases an IPv4 address on a Network to an owner (a Container uid): the requested fixed
    /// address, or the lowest free host address that is not the gateway.
    ///
    /// # Guarantees
    /// No address is ever leased twice on one network, even under concurrent allocation from
    /// several processes (a unique constraint backs the serialized transaction). Idempotent: an
    /// owner that already holds a fitting address gets the same lease back; a held address that
    /// no longer fits (the subnet changed, another fixed address was asked for) is replaced.
    ///
    /// # Errors
    /// `Lease(SubnetExhausted)` when no host address is free; `Lease(AddressUnavailable)` when
    /// the requested address is taken, outside the subnet, or the gateway.
    async fn allocate_lease(&self, req: LeaseRequest) -> Result<Lease>;

    /// Releases the leases of `owner_uid` on `network_uid`, or on every network when `None`.
    /// Returns how many were released; releasing nothing is success.
    async fn release_leases(&self, owner_uid: &str, network_uid: Option<&str>) -> Result<u64>;

    /// Releases every lease on a network (the Network is going away).
    async fn release_network_leases(&self, network_uid: &str) -> Result<u64>;

    /// Leases matching the filter, ordered by network and address.
    async fn list_leases(&self, filter: &LeaseFilter) -> Result<Vec<Lease>>;

    /// Gives `owner_uid` (a Container uid) a range of `pool.size` host ids for its user
    /// namespace: the range it already holds, else the lowest free one in `pool`.
    ///
    /// # Guarantees
    /// No two held ranges overlap, even under concurrent allocation from several processes
    /// (one serialized transaction; the primary key on the first id backs it). A range stays
    /// the owner's, across daemon restarts and pool changes, until [`Store::release_id_range`].
    ///
    /// # Errors
    /// `IdRange(PoolExhausted)` when no gap of `pool.size` ids is left in the pool.
    async fn allocate_id_range(&self, owner_uid: &str, pool: IdPool) -> Result<IdRange>;

    /// Releases the range of `owner_uid`; true when it held one. Releasing nothing is success.
    async fn release_id_range(&self, owner_uid: &str) -> Result<bool>;

    /// Held ranges, lowest first (only `owner_uid`'s when given).
    async fn list_id_ranges(&self, owner_uid: Option<&str>) -> Result<Vec<IdRange>>;

    /// Every change of one object still in the change feed, oldest first, and the revision up
    /// to which older history was compacted away (`tend history`).
    async fn history(&self, key: &ObjectKey) -> Result<(Vec<WatchEvent>, u64)>;

    /// The revisions of a Container (by uid), oldest first. Each spec generation gets one in
    /// the transaction that wrote it; they go with the object's row.
    async fn revisions(&self, uid: &str) -> Result<Vec<Revision>>;

    /// Names (or clears) the data snapshot tree of a revision; false when it does not exist.
    async fn set_revision_snapshot(
        &self,
        uid: &str,
        revision: u64,
        snapshot: Option<&str>,
    ) -> Result<bool>;

    /// Drops one revision (history limit); false when it did not exist.
    async fn delete_revision(&self, uid: &str, revision: u64) -> Result<bool>;
}
