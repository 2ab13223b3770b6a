//! The SQLite backend: one writer connection, a pool of read-only readers, WAL.
//!
//! Every write runs in a `BEGIN IMMEDIATE` transaction on the single writer connection, so
//! revisions are assigned in commit order even across processes (SQLite's write lock orders
//! them). Readers never wait for the writer: WAL gives each read a consistent snapshot.

use super::feed::Feed;
use super::idranges;
use super::leases;
use super::migrate::migrate;
use super::pool::{self, Pool};
use super::revisions::{self, Requester};
use super::txn::*;
use super::*;
use crate::meta::now;
use rusqlite::{params, Connection, Transaction, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// SQLite's `synchronous` setting. See docs/operations.md for why Normal is the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// WAL + NORMAL: never corrupts; a process crash loses nothing committed; a power loss may
    /// roll back the last commits.
    #[default]
    Normal,
    /// WAL + FULL: fsync on every commit; survives power loss at the cost of write latency.
    Full,
}

/// How to open a store.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    pub synchronous: Synchronous,
    /// Reader connections (reads run in parallel up to this many).
    pub readers: usize,
    /// How many revisions of change history the feed keeps for watches.
    pub history: u64,
    /// How long a writer waits for another process's write lock before `SQLITE_BUSY`.
    pub busy_timeout: Duration,
    /// The most events kept; older ones are dropped.
    pub max_events: u64,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            synchronous: Synchronous::Normal,
            readers: 8,
            history: 100_000,
            busy_timeout: Duration::from_secs(5),
            max_events: 10_000,
        }
    }
}

/// The embedded store.
pub struct SqliteStore {
    path: PathBuf,
    writer: Pool,
    readers: Pool,
    feed: Arc<Feed>,
    opts: OpenOptions,
    /// The revision of the last event this process recorded (see `Store::event_writes`).
    event_tx: tokio::sync::watch::Sender<i64>,
}

fn pool_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Pool(e.to_string())
}

pub(super) fn configure(
    conn: &Connection,
    opts: &OpenOptions,
    read_only: bool,
) -> rusqlite::Result<()> {
    conn.busy_timeout(opts.busy_timeout)?;
    let sync = match opts.synchronous {
        Synchronous::Normal => "NORMAL",
        Synchronous::Full => "FULL",
    };
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {sync}; PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY;"
    ))?;
    if read_only {
        conn.execute_batch("PRAGMA query_only = ON;")?;
    }
    Ok(())
}

fn make_pool(path: &Path, size: usize, opts: &OpenOptions, read_only: bool) -> Result<Pool> {
    pool::build(path.to_path_buf(), size, opts, read_only).map_err(pool_err)
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, applies migrations, and starts no
    /// background work until the first `watch`.
    pub async fn open(path: impl AsRef<Path>, opts: OpenOptions) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let p = path.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            let mut conn = Connection::open(&p).map_err(|source| StoreError::Open {
                path: p.clone(),
                source,
            })?;
            conn.busy_timeout(Duration::from_secs(30))?;
            let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                tracing::warn!(path = %p.display(), mode, "SQLite refused WAL mode");
            }
            migrate(&mut conn, &p)
        })
        .await
        .map_err(pool_err)??;
        let writer = make_pool(&path, 1, &opts, false)?;
        let readers = make_pool(&path, opts.readers.max(1), &opts, true)?;
        let feed = Feed::new(&path);
        Ok(Self {
            path,
            writer,
            readers,
            feed,
            opts,
            event_tx: tokio::sync::watch::channel(0).0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in one IMMEDIATE transaction on the writer; commits when it returns Ok.
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce(&mut Transaction<'_>, &OpenOptions) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let conn = self.writer.get().await.map_err(pool_err)?;
        let opts = self.opts.clone();
        let requester = Requester::current();
        let out = conn
            .interact(move |c| -> Result<T> {
                crate::failpoint::check("store.write").map_err(busy)?;
                Requester::on_thread(requester, || {
                    let mut tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                    let out = f(&mut tx, &opts)?;
                    tx.commit()?;
                    Ok(out)
                })
            })
            .await
            .map_err(pool_err)??;
        self.feed.poke();
        Ok(out)
    }

    /// Runs `f` on a read-only connection.
    pub(super) async fn read<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        read_on(&self.readers, f).await
    }

    /// `PRAGMA integrity_check`: `["ok"]` for a healthy database.
    pub async fn integrity_check(&self) -> Result<Vec<String>> {
        self.read(|c| {
            let mut st = c.prepare("PRAGMA integrity_check")?;
            let rows = st.query_map([], |r| r.get::<_, String>(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    /// Runs one read-only SQL statement; returns column names and rows as JSON values.
    pub async fn query(&self, sql: String) -> Result<(Vec<String>, Vec<Vec<serde_json::Value>>)> {
        self.read(move |c| {
            let mut st = c.prepare(&sql)?;
            let cols: Vec<String> = st.column_names().iter().map(|s| s.to_string()).collect();
            let n = cols.len();
            let mut rows = st.query([])?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                let mut vals = Vec::with_capacity(n);
                for i in 0..n {
                    use rusqlite::types::ValueRef;
                    vals.push(match row.get_ref(i)? {
                        ValueRef::Null => serde_json::Value::Null,
                        ValueRef::Integer(v) => v.into(),
                        ValueRef::Real(v) => v.into(),
                        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned().into(),
                        ValueRef::Blob(b) => format!("<{} bytes>", b.len()).into(),
                    });
                }
                out.push(vals);
            }
            Ok((cols, out))
        })
        .await
    }

    /// The revision at or below which change history was dropped.
    pub async fn compacted(&self) -> Result<u64> {
        self.read(|c| meta(c, "compacted")).await
    }
}

pub(super) async fn read_on<T, F>(pool: &Pool, f: F) -> Result<T>
where
    F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    let conn = pool.get().await.map_err(pool_err)?;
    conn.interact(f).await.map_err(pool_err)?
}

pub(super) fn meta(c: &Connection, key: &str) -> Result<u64> {
    let v: i64 = c
        .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row([key], |r| r.get(0))?;
    Ok(v as u64)
}

pub(super) fn parse_body(key: &str, body: &str) -> Result<AnyObject> {
    serde_json::from_str(body).map_err(|source| StoreError::Corrupt {
        key: key.to_string(),
        source,
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn create(&self, obj: AnyObject) -> Result<AnyObject> {
        self.write(move |tx, o| do_create(tx, o, obj)).await
    }

    async fn get(&self, key: &ObjectKey) -> Result<AnyObject> {
        let key = key.clone();
        self.read(move |c| load_existing(c, &key)).await
    }

    async fn list(&self, q: &ListQuery) -> Result<ObjectList> {
        let q = q.clone();
        self.read(move |c| {
            let tx = c.transaction()?;
            let revision = meta(&tx, "revision")?;
            let kind = q.kind.map(|k| k.as_str());
            let mut st = tx.prepare_cached(
                "SELECT kind, namespace, name, body FROM objects
                 WHERE (?1 IS NULL OR kind = ?1) AND (?2 IS NULL OR namespace = ?2) AND (?3 IS NULL OR name = ?3)
                 ORDER BY kind, namespace, name",
            )?;
            let mut rows = st.query(params![kind, q.namespace, q.name])?;
            let mut items = Vec::new();
            while let Some(r) = rows.next()? {
                let body: String = r.get(3)?;
                let obj = parse_body(&format!("{}/{}/{}", r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?), &body)?;
                if q.selector.matches(&obj.metadata.labels) {
                    items.push(obj);
                }
            }
            items.sort_by_key(|o| o.kind().map(|k| k as u8).unwrap_or(u8::MAX));
            Ok(ObjectList { items, revision })
        })
        .await
    }

    async fn update(&self, obj: AnyObject) -> Result<AnyObject> {
        let key = obj.key().map_err(StoreError::Invalid)?;
        let out = self.write(move |tx, o| do_update(tx, o, obj)).await?;
        out.ok_or(StoreError::NotFound(key))
    }

    async fn update_status(
        &self,
        key: &ObjectKey,
        rv: u64,
        status: serde_json::Value,
    ) -> Result<AnyObject> {
        let key = key.clone();
        self.write(move |tx, o| {
            let mut current = load_existing(tx, &key)?;
            check_rv(&key, Some(&rv.to_string()), &current)?;
            if current.status == status {
                return Ok(current);
            }
            current.status = status;
            commit_change(tx, o, &mut current, ChangeType::Modified)?;
            Ok(current)
        })
        .await
    }

    async fn merge_patch(&self, key: &ObjectKey, patch: serde_json::Value) -> Result<AnyObject> {
        let key = key.clone();
        let k2 = key.clone();
        let out = self
            .write(move |tx, o| {
                let current = load_existing(tx, &key)?;
                let mut patch = patch;
                let given_rv = patch
                    .pointer("/metadata/resourceVersion")
                    .and_then(|v| v.as_str())
                    .map(str::to_string);
                check_rv(&key, given_rv.as_deref(), &current)?;
                if let Some(m) = patch.as_object_mut() {
                    m.remove("status");
                }
                let mut doc = serde_json::to_value(&current).expect("objects serialize");
                json_patch::merge(&mut doc, &patch);
                let desired: AnyObject = serde_path_to_error::deserialize(doc).map_err(|e| {
                    let mut errs = FieldErrors::default();
                    errs.push(e.path().to_string(), e.into_inner().to_string());
                    StoreError::Invalid(errs)
                })?;
                if desired.key().map_err(StoreError::Invalid)? != key {
                    let mut errs = FieldErrors::default();
                    errs.push("metadata", "a patch may not change kind, namespace or name");
                    return Err(StoreError::Invalid(errs));
                }
                desired.validate().map_err(StoreError::Invalid)?;
                check_dependencies(tx, &desired)?;
                match merge_user_fields(current.clone(), desired, false) {
                    Some(next) => save(tx, o, next),
                    None => Ok(Some(current)),
                }
            })
            .await?;
        out.ok_or(StoreError::NotFound(k2))
    }

    async fn apply(
        &self,
        objects: Vec<AnyObject>,
        dry_run: bool,
    ) -> std::result::Result<Vec<ApplyResult>, ApplyError> {
        let conn = self
            .writer
            .get()
            .await
            .map_err(|e| pool_apply_error(pool_err(e)))?;
        let opts = self.opts.clone();
        let out = conn
            .interact(
                move |c| -> std::result::Result<Vec<ApplyResult>, ApplyError> {
                    crate::failpoint::check("store.write")
                        .map_err(|fp| pool_apply_error(busy(fp)))?;
                    let mut tx = c
                        .transaction_with_behavior(TransactionBehavior::Immediate)
                        .map_err(|e| pool_apply_error(e.into()))?;
                    let mut applied = Vec::with_capacity(objects.len());
                    let mut failure = None;
                    for (i, obj) in objects.into_iter().enumerate() {
                        let key = obj.key().ok();
                        let sp = tx.savepoint().map_err(|e| pool_apply_error(e.into()))?;
                        match do_apply_one(&sp, &opts, obj) {
                            Ok(r) => {
                                sp.commit().map_err(|e| pool_apply_error(e.into()))?;
                                applied.push(r);
                            }
                            Err(error) => {
                                drop(sp);
                                failure = Some((i, key, error));
                                break;
                            }
                        }
                    }
                    if dry_run {
                        tx.rollback().map_err(|e| pool_apply_error(e.into()))?;
                    } else if let Err(e) = tx.commit() {
                        // Nothing was committed: report the failure against the first document.
                        return Err(ApplyError {
                            applied: vec![],
                            failed: 0,
                            key: None,
                            error: Box::new(e.into()),
                        });
                    }
                    match failure {
                        None => Ok(applied),
                        Some((failed, key, error)) => Err(ApplyError {
                            applied,
                            failed,
                            key,
                            error: Box::new(error),
                        }),
                    }
                },
            )
            .await
            .map_err(|e| pool_apply_error(pool_err(e)))?;
        if !dry_run {
            self.feed.poke();
        }
        out
    }

    async fn delete(&self, key: &ObjectKey, opts: &DeleteOptions) -> Result<Deleted> {
        let (key, dopts) = (key.clone(), opts.clone());
        self.write(move |tx, o| {
            let mut current = load_existing(tx, &key)?;
            if let Some(uid) = &dopts.uid {
                if current.metadata.uid.as_ref() != Some(uid) {
                    return Err(StoreError::Precondition {
                        key,
                        message: format!("uid is not {uid}"),
                    });
                }
            }
            if let Some(rv) = &dopts.resource_version {
                check_rv(&key, Some(rv), &current)?;
            }
            let extra = match dopts.propagation {
                Propagation::Background => None,
                Propagation::Foreground => Some(FOREGROUND_FINALIZER),
                Propagation::Orphan => Some(ORPHAN_FINALIZER),
            };
            let grace = dopts.grace_period_seconds.map(i64::from);
            let shorter = grace.filter(|g| {
                current
                    .metadata
                    .deletion_grace_period_seconds
                    .is_none_or(|have| *g < have)
            });
            if current.metadata.is_terminating()
                && extra.is_none_or(|f| current.metadata.has_finalizer(f))
            {
                if let Some(g) = shorter {
                    // A second delete may shorten the grace (kubectl delete --force after a
                    // plain delete); the owning loop's next attempt uses it.
                    current.metadata.deletion_grace_period_seconds = Some(g);
                    commit_change(tx, o, &mut current, ChangeType::Modified)?;
                    return Ok(Deleted::Terminating(current));
                }
            }
            if current.metadata.is_terminating() {
                // Deleting again with foreground or orphan switches the propagation, as in
                // Kubernetes (an object held Terminating by its users can still be taken
                // down with them); a plain second delete changes nothing.
                let Some(f) = extra.filter(|f| !current.metadata.has_finalizer(f)) else {
                    return Ok(Deleted::Terminating(current));
                };
                current
                    .metadata
                    .finalizers
                    .retain(|x| x != FOREGROUND_FINALIZER && x != ORPHAN_FINALIZER);
                current.metadata.finalizers.push(f.to_string());
                commit_change(tx, o, &mut current, ChangeType::Modified)?;
                return Ok(Deleted::Terminating(current));
            }
            current.metadata.deletion_timestamp = Some(now());
            current.metadata.deletion_grace_period_seconds = grace;
            if let Some(f) = extra {
                if !current.metadata.has_finalizer(f) {
                    current.metadata.finalizers.push(f.to_string());
                }
            }
            let snapshot = current.clone();
            Ok(match save(tx, o, current)? {
                Some(obj) => Deleted::Terminating(obj),
                None => Deleted::Gone(snapshot),
            })
        })
        .await
    }

    async fn add_finalizer(&self, key: &ObjectKey, finalizer: &str) -> Result<AnyObject> {
        let (key, f) = (key.clone(), finalizer.to_string());
        self.write(move |tx, o| {
            let mut current = load_existing(tx, &key)?;
            if current.metadata.has_finalizer(&f) {
                return Ok(current);
            }
            if current.metadata.is_terminating() {
                return Err(StoreError::Precondition {
                    key,
                    message: format!("cannot add finalizer {f:?}: the object is being deleted"),
                });
            }
            current.metadata.finalizers.push(f);
            commit_change(tx, o, &mut current, ChangeType::Modified)?;
            Ok(current)
        })
        .await
    }

    async fn remove_finalizer(&self, key: &ObjectKey, finalizer: &str) -> Result<Deleted> {
        let (key, f) = (key.clone(), finalizer.to_string());
        self.write(move |tx, o| {
            let Some(mut current) = load(tx, &key)? else {
                return Err(StoreError::NotFound(key));
            };
            if !current.metadata.has_finalizer(&f) {
                return Ok(Deleted::Terminating(current));
            }
            current.metadata.finalizers.retain(|x| *x != f);
            let snapshot = current.clone();
            Ok(match save(tx, o, current)? {
                Some(obj) => Deleted::Terminating(obj),
                None => Deleted::Gone(snapshot),
            })
        })
        .await
    }

    async fn revision(&self) -> Result<u64> {
        self.read(|c| meta(c, "revision")).await
    }

    async fn watch(&self, from: u64) -> Result<WatchStream> {
        self.feed.watch(&self.readers, from).await
    }

    async fn record_event(&self, ev: NewEvent) -> Result<()> {
        let conn = self.writer.get().await.map_err(pool_err)?;
        let max = self.opts.max_events;
        let id = conn
            .interact(move |c| -> Result<i64> {
                let ts = now().to_rfc3339();
                // A repeat moves the row to a new, highest id: ids are the order of changes,
                // which is what a watch of events follows.
                let id: i64 = c
                    .prepare_cached(
                        "INSERT INTO events (namespace, kind, name, uid, type, reason, message, count, first_timestamp, last_timestamp)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8, ?8)
                         ON CONFLICT (uid, type, reason, message) DO UPDATE SET count = count + 1, last_timestamp = excluded.last_timestamp,
                             id = (SELECT max(id) FROM events) + 1
                         RETURNING id",
                    )?
                    .query_row(
                        params![ev.object.namespace, ev.object.kind.as_str(), ev.object.name, ev.uid, ev.type_.as_str(), ev.reason, ev.message, ts],
                        |r| r.get(0),
                    )?;
                if id % 256 == 0 {
                    c.prepare_cached("DELETE FROM events WHERE id <= (SELECT max(id) FROM events) - ?1")?
                        .execute([max as i64])?;
                }
                Ok(id)
            })
            .await
            .map_err(pool_err)??;
        self.event_tx.send_if_modified(|last| {
            let newer = id > *last;
            *last = (*last).max(id);
            newer
        });
        Ok(())
    }

    async fn list_events(&self, q: &EventQuery) -> Result<Vec<Event>> {
        let q = q.clone();
        self.read(move |c| {
            let (kind, name) = match &q.object {
                Some(k) => (Some(k.kind.as_str().to_string()), Some(k.name.clone())),
                None => (q.kind.clone(), q.name.clone()),
            };
            let ns = q.object.as_ref().map(|k| k.namespace.clone()).or(q.namespace.clone());
            const COLS: &str = "SELECT id, namespace, kind, name, uid, type, reason, message, count, first_timestamp, last_timestamp
                 FROM events WHERE (?1 IS NULL OR namespace = ?1) AND (?2 IS NULL OR kind = ?2) AND (?3 IS NULL OR name = ?3)
                 AND (?4 IS NULL OR uid = ?4) AND (?5 IS NULL OR id > ?5)";
            let sql = if q.after.is_some() {
                format!("{COLS} ORDER BY id ASC LIMIT ?6")
            } else {
                format!("{COLS} ORDER BY last_timestamp DESC, id DESC LIMIT ?6")
            };
            let mut st = c.prepare_cached(&sql)?;
            let limit = q.limit.unwrap_or(1000) as i64;
            let rows = st.query_map(params![ns, kind, name, q.uid, q.after, limit], |r| {
                let ts = |i: usize| -> rusqlite::Result<crate::meta::Time> {
                    let s: String = r.get(i)?;
                    chrono::DateTime::parse_from_rfc3339(&s)
                        .map(|t| t.with_timezone(&chrono::Utc))
                        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e)))
                };
                let type_: String = r.get(5)?;
                Ok(Event {
                    id: r.get(0)?,
                    namespace: r.get(1)?,
                    kind: r.get(2)?,
                    name: r.get(3)?,
                    uid: r.get(4)?,
                    type_: if type_ == "Warning" { EventType::Warning } else { EventType::Normal },
                    reason: r.get(6)?,
                    message: r.get(7)?,
                    count: r.get::<_, i64>(8)? as u64,
                    first_timestamp: ts(9)?,
                    last_timestamp: ts(10)?,
                })
            })?;
            let mut events = rows.collect::<rusqlite::Result<Vec<_>>>()?;
            if q.after.is_none() {
                events.reverse();
            }
            Ok(events)
        })
        .await
    }

    async fn event_revision(&self) -> Result<i64> {
        self.read(|c| Ok(c.query_row("SELECT coalesce(max(id), 0) FROM events", [], |r| r.get(0))?))
            .await
    }

    fn event_writes(&self) -> Option<tokio::sync::watch::Receiver<i64>> {
        Some(self.event_tx.subscribe())
    }

    async fn allocate_lease(&self, req: LeaseRequest) -> Result<Lease> {
        self.write_leases(move |c| leases::allocate(c, &req, &now().to_rfc3339()))
            .await
    }

    async fn release_leases(&self, owner_uid: &str, network_uid: Option<&str>) -> Result<u64> {
        let (o, n) = (owner_uid.to_string(), network_uid.map(str::to_string));
        self.write_leases(move |c| leases::release(c, &o, n.as_deref()))
            .await
    }

    async fn release_network_leases(&self, network_uid: &str) -> Result<u64> {
        let n = network_uid.to_string();
        self.write_leases(move |c| leases::release_network(c, &n))
            .await
    }

    async fn list_leases(&self, filter: &LeaseFilter) -> Result<Vec<Lease>> {
        let f = filter.clone();
        self.read(move |c| leases::list(c, &f)).await
    }

    async fn allocate_id_range(&self, owner_uid: &str, pool: IdPool) -> Result<IdRange> {
        let o = owner_uid.to_string();
        self.write_leases(move |c| idranges::allocate(c, &o, &pool, &now().to_rfc3339()))
            .await
    }

    async fn release_id_range(&self, owner_uid: &str) -> Result<bool> {
        let o = owner_uid.to_string();
        self.write_leases(move |c| idranges::release(c, &o)).await
    }

    async fn list_id_ranges(&self, owner_uid: Option<&str>) -> Result<Vec<IdRange>> {
        let o = owner_uid.map(str::to_string);
        self.read(move |c| idranges::list(c, o.as_deref())).await
    }

    async fn history(&self, key: &ObjectKey) -> Result<(Vec<WatchEvent>, u64)> {
        let key = key.clone();
        self.read(move |c| {
            let tx = c.transaction()?;
            let compacted = meta(&tx, "compacted")?;
            let mut st = tx.prepare_cached(
                "SELECT revision, type, body FROM changes
                 WHERE kind = ?1 AND namespace = ?2 AND name = ?3 ORDER BY revision",
            )?;
            let mut rows = st.query(params![key.kind.as_str(), key.namespace, key.name])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let ty: String = r.get(1)?;
                let body: String = r.get(2)?;
                out.push(WatchEvent {
                    revision: r.get::<_, i64>(0)? as u64,
                    type_: match ty.as_str() {
                        "ADDED" => ChangeType::Added,
                        "DELETED" => ChangeType::Deleted,
                        _ => ChangeType::Modified,
                    },
                    kind: key.kind,
                    object: parse_body(&key.to_string(), &body)?,
                });
            }
            Ok((out, compacted))
        })
        .await
    }

    async fn revisions(&self, uid: &str) -> Result<Vec<Revision>> {
        let uid = uid.to_string();
        self.read(move |c| revisions::list(c, &uid)).await
    }

    async fn set_revision_snapshot(
        &self,
        uid: &str,
        revision: u64,
        snapshot: Option<&str>,
    ) -> Result<bool> {
        let (uid, snap) = (uid.to_string(), snapshot.map(str::to_string));
        self.write_leases(move |c| revisions::set_snapshot(c, &uid, revision, snap.as_deref()))
            .await
    }

    async fn delete_revision(&self, uid: &str, revision: u64) -> Result<bool> {
        let uid = uid.to_string();
        self.write_leases(move |c| revisions::delete(c, &uid, revision))
            .await
    }
}

impl SqliteStore {
    /// Runs a lease (or revision bookkeeping) change in one IMMEDIATE transaction on the
    /// writer. Leases are not objects: no revision, no change row, no feed wake-up.
    async fn write_leases<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let conn = self.writer.get().await.map_err(pool_err)?;
        conn.interact(move |c| -> Result<T> {
            crate::failpoint::check("store.write").map_err(busy)?;
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        })
        .await
        .map_err(pool_err)?
    }
}

fn pool_apply_error(error: StoreError) -> ApplyError {
    ApplyError {
        applied: vec![],
        failed: 0,
        key: None,
        error: Box::new(error),
    }
}

/// An injected store-write failure looks exactly like SQLITE_BUSY to callers.
fn busy(fp: crate::failpoint::Failpoint) -> StoreError {
    StoreError::Sqlite(rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
        Some(fp.to_string()),
    ))
}
