//! Row-level work inside one write transaction: load, compare-and-swap, assign the next
//! revision and append the change, and create/update/apply one object.

use super::sqlite::{parse_body, OpenOptions};
use super::*;
use crate::meta::now;
use rusqlite::{params, Connection, OptionalExtension};

pub(super) fn load(c: &Connection, key: &ObjectKey) -> Result<Option<AnyObject>> {
    let body: Option<String> = c
        .prepare_cached(
            "SELECT body FROM objects WHERE kind = ?1 AND namespace = ?2 AND name = ?3",
        )?
        .query_row(params![key.kind.as_str(), key.namespace, key.name], |r| {
            r.get(0)
        })
        .optional()?;
    body.map(|b| parse_body(&key.to_string(), &b)).transpose()
}

/// Refuses a Container whose `dependsOn` closes a cycle through the stored Containers of its
/// namespace (a dependency on itself included), naming the cycle.
pub(super) fn check_dependencies(c: &Connection, obj: &AnyObject) -> Result<()> {
    let Ok(key) = obj.key() else { return Ok(()) };
    if key.kind != Kind::Container {
        return Ok(());
    }
    let first = dependency_names(&obj.spec);
    if first.is_empty() {
        return Ok(());
    }
    let found = crate::kinds::health::find_cycle(&key.name, &first, |n| {
        let other = ObjectKey::new(Kind::Container, &key.namespace, n);
        Ok::<_, StoreError>(load(c, &other)?.map_or_else(Vec::new, |o| dependency_names(&o.spec)))
    })?;
    match found {
        None => Ok(()),
        Some(cycle) => {
            let mut errs = FieldErrors::default();
            errs.push(
                "spec.dependsOn",
                format!("dependency cycle: {}", cycle.join(" → ")),
            );
            Err(StoreError::Invalid(errs))
        }
    }
}

fn dependency_names(spec: &serde_json::Value) -> Vec<String> {
    spec.get("dependsOn")
        .and_then(|d| d.as_array())
        .into_iter()
        .flatten()
        .filter_map(|d| d.get("container")?.as_str().map(str::to_string))
        .collect()
}

pub(super) fn load_existing(c: &Connection, key: &ObjectKey) -> Result<AnyObject> {
    load(c, key)?.ok_or_else(|| StoreError::NotFound(key.clone()))
}

/// Assigns the next revision to `obj`, writes (or removes) its row, and appends the change.
pub(super) fn commit_change(
    tx: &Connection,
    opts: &OpenOptions,
    obj: &mut AnyObject,
    ty: ChangeType,
) -> Result<()> {
    let rev: i64 = tx
        .prepare_cached("UPDATE meta SET value = value + 1 WHERE key = 'revision' RETURNING value")?
        .query_row([], |r| r.get(0))?;
    obj.metadata.resource_version = Some(rev.to_string());
    let body = serde_json::to_string(obj).expect("objects always serialize");
    let (kind, ns, name) = (&obj.kind, obj.metadata.ns().to_string(), &obj.metadata.name);
    match ty {
        ChangeType::Deleted => {
            tx.prepare_cached(
                "DELETE FROM objects WHERE kind = ?1 AND namespace = ?2 AND name = ?3",
            )?
            .execute(params![kind, ns, name])?;
        }
        _ => {
            tx.prepare_cached(
                "INSERT INTO objects (kind, namespace, name, uid, revision, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (kind, namespace, name) DO UPDATE SET uid = excluded.uid,
                   revision = excluded.revision, body = excluded.body",
            )?
            .execute(params![kind, ns, name, obj.metadata.uid, rev, body])?;
        }
    }
    if obj.kind == Kind::Container.as_str() {
        match (ty, &obj.metadata.uid) {
            (ChangeType::Deleted, Some(uid)) => super::revisions::forget(tx, uid)?,
            (ChangeType::Deleted, None) => {}
            _ => super::revisions::record(tx, obj)?,
        }
    }
    tx.prepare_cached("INSERT INTO changes (revision, type, kind, namespace, name, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?
        .execute(params![rev, ty.as_str(), kind, ns, name, body])?;
    if rev as u64 % 1024 == 0 && rev as u64 > opts.history {
        let floor = rev as u64 - opts.history;
        tx.prepare_cached("DELETE FROM changes WHERE revision <= ?1")?
            .execute([floor as i64])?;
        tx.prepare_cached("UPDATE meta SET value = ?1 WHERE key = 'compacted'")?
            .execute([floor as i64])?;
    }
    Ok(())
}

/// Writes `obj` as MODIFIED, or removes the row when deletion is pending and no finalizer is
/// left. Returns None when the row went.
pub(super) fn save(
    tx: &Connection,
    opts: &OpenOptions,
    mut obj: AnyObject,
) -> Result<Option<AnyObject>> {
    if obj.metadata.deletion_timestamp.is_some() && obj.metadata.finalizers.is_empty() {
        commit_change(tx, opts, &mut obj, ChangeType::Deleted)?;
        return Ok(None);
    }
    commit_change(tx, opts, &mut obj, ChangeType::Modified)?;
    Ok(Some(obj))
}

pub(super) fn check_rv(key: &ObjectKey, given: Option<&str>, current: &AnyObject) -> Result<()> {
    let cur = current.metadata.revision().unwrap_or(0);
    match given {
        None | Some("") => Ok(()),
        Some(g) if g.parse::<u64>().ok() == Some(cur) => Ok(()),
        Some(g) => Err(StoreError::Conflict {
            key: key.clone(),
            given: g.to_string(),
            current: cur,
        }),
    }
}

pub(super) fn do_create(
    tx: &Connection,
    opts: &OpenOptions,
    mut obj: AnyObject,
) -> Result<AnyObject> {
    obj.validate().map_err(StoreError::Invalid)?;
    check_dependencies(tx, &obj)?;
    let key = obj.key().map_err(StoreError::Invalid)?;
    if load(tx, &key)?.is_some() {
        return Err(StoreError::AlreadyExists(key));
    }
    let m = &mut obj.metadata;
    m.namespace = Some(key.namespace.clone());
    m.uid = Some(uuid::Uuid::new_v4().to_string());
    m.generation = 1;
    m.creation_timestamp = Some(now());
    m.deletion_timestamp = None;
    m.deletion_grace_period_seconds = None;
    m.generate_name = None;
    obj.status = serde_json::Value::Null;
    commit_change(tx, opts, &mut obj, ChangeType::Added)?;
    Ok(obj)
}

/// Moves the user-owned parts of `desired` onto `current`; bumps generation if the spec moved.
/// Returns None when nothing changed.
pub(super) fn merge_user_fields(
    mut current: AnyObject,
    desired: AnyObject,
    keep_server_meta: bool,
) -> Option<AnyObject> {
    let before = current.clone();
    let d = desired.metadata;
    current.metadata.labels = d.labels;
    current.metadata.annotations = d.annotations;
    if !keep_server_meta {
        current.metadata.finalizers = d.finalizers;
        current.metadata.owner_references = d.owner_references;
    } else if !d.owner_references.is_empty() {
        current.metadata.owner_references = d.owner_references;
    }
    if current.spec != desired.spec {
        current.spec = desired.spec;
        current.metadata.generation += 1;
    }
    (current != before).then_some(current)
}

pub(super) fn do_update(
    tx: &Connection,
    opts: &OpenOptions,
    obj: AnyObject,
) -> Result<Option<AnyObject>> {
    obj.validate().map_err(StoreError::Invalid)?;
    check_dependencies(tx, &obj)?;
    let key = obj.key().map_err(StoreError::Invalid)?;
    let current = load_existing(tx, &key)?;
    check_rv(&key, obj.metadata.resource_version.as_deref(), &current)?;
    if let Some(uid) = &obj.metadata.uid {
        if Some(uid) != current.metadata.uid.as_ref() {
            return Err(StoreError::Precondition {
                key,
                message: format!("uid {uid} does not match the stored object"),
            });
        }
    }
    match merge_user_fields(current.clone(), obj, false) {
        Some(next) => save(tx, opts, next),
        None => Ok(Some(current)),
    }
}

/// An apply of an image State with `pullPolicy: Always` asks for the tag to be resolved again
/// even when the spec is unchanged: it stamps [`RECONCILE_REQUESTED`] with the time, a metadata
/// change that wakes the State controller (see `controllers/src/index.rs`) without a new
/// generation.
///
/// [`RECONCILE_REQUESTED`]: crate::kinds::state::RECONCILE_REQUESTED
fn request_resolve(obj: &mut AnyObject) {
    use crate::kinds::state::{StateSpec, RECONCILE_REQUESTED};
    if obj.kind != crate::Kind::State.as_str() {
        return;
    }
    let Ok(spec) = serde_json::from_value::<StateSpec>(obj.spec.clone()) else {
        return;
    };
    if spec.resolves_on_apply() {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        obj.metadata
            .annotations
            .insert(RECONCILE_REQUESTED.to_string(), now);
    }
}

pub(super) fn do_apply_one(
    tx: &Connection,
    opts: &OpenOptions,
    obj: AnyObject,
) -> Result<ApplyResult> {
    obj.validate().map_err(StoreError::Invalid)?;
    check_dependencies(tx, &obj)?;
    let key = obj.key().map_err(StoreError::Invalid)?;
    let Some(current) = load(tx, &key)? else {
        let object = do_create(tx, opts, obj)?;
        return Ok(ApplyResult {
            key,
            action: Applied::Created,
            object,
        });
    };
    check_rv(&key, obj.metadata.resource_version.as_deref(), &current)?;
    if current.metadata.is_terminating() {
        return Err(StoreError::Precondition {
            key,
            message:
                "it is being deleted; wait until it is gone (tend delete --wait), then apply again"
                    .into(),
        });
    }
    let mut obj = obj;
    request_resolve(&mut obj);
    match merge_user_fields(current.clone(), obj, true) {
        None => Ok(ApplyResult {
            key,
            action: Applied::Unchanged,
            object: current,
        }),
        Some(next) => {
            let object = save(tx, opts, next)?.expect("not terminating, so the row stays");
            Ok(ApplyResult {
                key,
                action: Applied::Configured,
                object,
            })
        }
    }
}
