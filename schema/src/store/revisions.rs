//! Numbered revisions of Container specs, recorded in the same transaction as the spec change
//! that made them, with who asked and why (the [`Requester`] of the write).
//!
//! A write's requester is set by the API (from the authenticated identity) with
//! [`Requester::scope`] around the store call; [`super::SqliteStore`] carries it into its
//! writer thread. A write outside any scope is recorded as `local`.

use super::Result;
use crate::meta::{now, Time};
use crate::object::AnyObject;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;

/// Who made a write, why, and (for `rollout undo --data`) which data the new revision wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requester {
    /// `local` (the unix socket or the store directly) or `token:<id>`.
    pub who: String,
    /// Recorded as the revision's change cause (`rollback to revision 2`); may be empty.
    pub cause: String,
    /// The snapshot tree whose data the new revision is to run on.
    pub restore_snapshot: Option<String>,
}

tokio::task_local! {
    static REQUESTER: Requester;
}

thread_local! {
    /// The requester of the write running on this (writer) thread.
    static WRITING: RefCell<Option<Requester>> = const { RefCell::new(None) };
}

impl Requester {
    /// A requester that only says who.
    pub fn who(who: impl Into<String>) -> Self {
        Self {
            who: who.into(),
            ..Default::default()
        }
    }

    /// Runs `f` with every store write in it attributed to `self`.
    pub async fn scope<F: std::future::Future>(self, f: F) -> F::Output {
        REQUESTER.scope(self, f).await
    }

    /// The requester of the current task, if any.
    pub(super) fn current() -> Option<Requester> {
        REQUESTER.try_with(Clone::clone).ok()
    }

    /// Makes `r` the requester of writes on this thread while `f` runs.
    pub(super) fn on_thread<T>(r: Option<Requester>, f: impl FnOnce() -> T) -> T {
        WRITING.with(|w| *w.borrow_mut() = r);
        let out = f();
        WRITING.with(|w| *w.borrow_mut() = None);
        out
    }

    fn on_this_thread() -> Requester {
        WRITING
            .with(|w| w.borrow().clone())
            .unwrap_or_else(|| Requester::who("local"))
    }
}

/// One revision of a Container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Revision {
    pub revision: u64,
    /// The object's `metadata.generation` this revision's spec had.
    pub generation: i64,
    pub spec: serde_json::Value,
    pub created_at: Time,
    pub created_by: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cause: String,
    /// The read-only tree with this revision's data as a rollout left it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// The tree whose data this revision was asked to run on (`rollout undo --data`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_snapshot: Option<String>,
}

/// Records `obj`'s spec as a new revision unless its generation already has one.
pub(super) fn record(c: &Connection, obj: &AnyObject) -> Result<()> {
    let Some(uid) = &obj.metadata.uid else {
        return Ok(());
    };
    let g = obj.metadata.generation;
    let known: Option<i64> = c
        .prepare_cached("SELECT revision FROM revisions WHERE uid = ?1 AND generation = ?2")?
        .query_row(params![uid, g], |r| r.get(0))
        .optional()?;
    if known.is_some() {
        return Ok(());
    }
    let next: i64 = c
        .prepare_cached("SELECT COALESCE(MAX(revision), 0) + 1 FROM revisions WHERE uid = ?1")?
        .query_row([uid], |r| r.get(0))?;
    let who = Requester::on_this_thread();
    let spec = serde_json::to_string(&obj.spec).expect("specs serialize");
    c.prepare_cached(
        "INSERT INTO revisions (uid, revision, generation, spec, created_at, created_by, cause, restore_snapshot)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        uid,
        next,
        g,
        spec,
        now().to_rfc3339(),
        who.who,
        who.cause,
        who.restore_snapshot
    ])?;
    Ok(())
}

/// Drops the revisions of an object whose row went.
pub(super) fn forget(c: &Connection, uid: &str) -> Result<()> {
    c.prepare_cached("DELETE FROM revisions WHERE uid = ?1")?
        .execute([uid])?;
    Ok(())
}

pub(super) fn list(c: &Connection, uid: &str) -> Result<Vec<Revision>> {
    let mut st = c.prepare_cached(
        "SELECT revision, generation, spec, created_at, created_by, cause, snapshot, restore_snapshot
         FROM revisions WHERE uid = ?1 ORDER BY revision",
    )?;
    let rows = st.query_map([uid], |r| {
        let spec: String = r.get(2)?;
        let at: String = r.get(3)?;
        Ok(Revision {
            revision: r.get::<_, i64>(0)? as u64,
            generation: r.get(1)?,
            spec: serde_json::from_str(&spec).unwrap_or(serde_json::Value::Null),
            created_at: chrono::DateTime::parse_from_rfc3339(&at)
                .map(|t| t.with_timezone(&chrono::Utc))
                .unwrap_or_default(),
            created_by: r.get(4)?,
            cause: r.get(5)?,
            snapshot: r.get(6)?,
            restore_snapshot: r.get(7)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

pub(super) fn set_snapshot(
    c: &Connection,
    uid: &str,
    revision: u64,
    snapshot: Option<&str>,
) -> Result<bool> {
    let n = c
        .prepare_cached("UPDATE revisions SET snapshot = ?3 WHERE uid = ?1 AND revision = ?2")?
        .execute(params![uid, revision as i64, snapshot])?;
    Ok(n > 0)
}

pub(super) fn delete(c: &Connection, uid: &str, revision: u64) -> Result<bool> {
    let n = c
        .prepare_cached("DELETE FROM revisions WHERE uid = ?1 AND revision = ?2")?
        .execute(params![uid, revision as i64])?;
    Ok(n > 0)
}
