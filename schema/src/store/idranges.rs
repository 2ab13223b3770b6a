//! Host uid/gid ranges of user-namespaced Containers: allocation from a pool, release by owner,
//! listing. Like IPv4 leases, ranges are rows beside the objects (no revision, no change feed),
//! allocated in one `BEGIN IMMEDIATE` transaction so that concurrent allocations, from this
//! process or another, are serialized by SQLite's write lock.

use super::{Result, StoreError};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

/// Where ranges are cut from: `count` ranges of `size` ids starting at host id `first`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdPool {
    /// The first host id of the pool.
    pub first: u32,
    /// Ids per range (container ids 0..size-1).
    pub size: u32,
    /// How many ranges fit in the pool.
    pub count: u32,
}

impl Default for IdPool {
    /// 1,000,000,000 onwards, 65536 ids per range, 1024 ranges: far above the 100000-based
    /// ranges `useradd` writes into /etc/subuid, and below 2^31 so every id is a positive
    /// `int` for tools that print ids signed.
    fn default() -> Self {
        Self {
            first: 1_000_000_000,
            size: 65536,
            count: 1024,
        }
    }
}

impl IdPool {
    /// One past the last host id of the pool.
    pub fn end(&self) -> u64 {
        u64::from(self.first) + u64::from(self.size) * u64::from(self.count)
    }

    /// Checks that the pool fits below 2^32 - 1 (`(uid_t)-1` is never an id) and is not empty.
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.size == 0 || self.count == 0 {
            return Err(
                "the user namespace pool needs at least one range of at least one id".into(),
            );
        }
        if self.end() > u64::from(u32::MAX) {
            return Err(format!(
                "the user namespace pool {}+{}x{} ends past host id 4294967294",
                self.first, self.count, self.size
            ));
        }
        if self.first == 0 {
            return Err("the user namespace pool must not start at host id 0 (root)".into());
        }
        Ok(())
    }
}

/// Host ids `first..first+size` held by a Container (`owner_uid`): its uid 0 is host `first`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdRange {
    pub first: u32,
    pub size: u32,
    pub owner_uid: String,
    pub created_at: String,
}

/// Why no range could be given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdRangeError {
    /// Every range of the pool is held.
    #[error("the user namespace pool (host ids {first}..{end}, {count} ranges of {size}) is exhausted: {held} ranges are held")]
    PoolExhausted {
        first: u32,
        end: u64,
        size: u32,
        count: u32,
        held: u64,
    },
}

fn to_range(r: &rusqlite::Row<'_>) -> rusqlite::Result<IdRange> {
    Ok(IdRange {
        first: r.get(0)?,
        size: r.get(1)?,
        owner_uid: r.get(2)?,
        created_at: r.get(3)?,
    })
}

fn held_by(c: &Connection, owner_uid: &str) -> Result<Option<IdRange>> {
    Ok(c.query_row(
        "SELECT first_id, size, owner_uid, created_at FROM id_ranges WHERE owner_uid = ?1",
        params![owner_uid],
        to_range,
    )
    .optional()?)
}

/// Allocates inside an open write transaction: the range `owner_uid` already holds (whatever
/// the pool says now), or the lowest gap of `pool.size` ids in the pool that overlaps no held
/// range.
pub(super) fn allocate(
    c: &Connection,
    owner_uid: &str,
    pool: &IdPool,
    now: &str,
) -> Result<IdRange> {
    if let Some(r) = held_by(c, owner_uid)? {
        return Ok(r);
    }
    let size = u64::from(pool.size);
    let mut st = c.prepare(
        "SELECT first_id, size FROM id_ranges WHERE first_id + size > ?1 AND first_id < ?2 ORDER BY first_id",
    )?;
    let held = st.query_map(params![pool.first, pool.end() as i64], |r| {
        Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
    })?;
    let mut candidate = u64::from(pool.first);
    let mut count = 0u64;
    // Sorted by start: a range at or past candidate + size leaves the gap before it free.
    for h in held {
        let (first, len) = h?;
        count += 1;
        if first >= candidate + size {
            break;
        }
        candidate = candidate.max(first + len);
    }
    if candidate + size > pool.end() {
        return Err(StoreError::IdRange(IdRangeError::PoolExhausted {
            first: pool.first,
            end: pool.end(),
            size: pool.size,
            count: pool.count,
            held: count,
        }));
    }
    c.execute(
        "INSERT INTO id_ranges (first_id, size, owner_uid, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![candidate as i64, pool.size, owner_uid, now],
    )?;
    held_by(c, owner_uid)?.ok_or_else(|| StoreError::Pool("id range vanished after insert".into()))
}

/// Deletes the range of `owner_uid`; true when there was one.
pub(super) fn release(c: &Connection, owner_uid: &str) -> Result<bool> {
    Ok(c.execute(
        "DELETE FROM id_ranges WHERE owner_uid = ?1",
        params![owner_uid],
    )? > 0)
}

/// Every held range, lowest first; only `owner_uid`'s when given.
pub(super) fn list(c: &Connection, owner_uid: Option<&str>) -> Result<Vec<IdRange>> {
    let mut st = c.prepare(
        "SELECT first_id, size, owner_uid, created_at FROM id_ranges
         WHERE (?1 IS NULL OR owner_uid = ?1) ORDER BY first_id",
    )?;
    let rows = st.query_map(params![owner_uid], to_range)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{OpenOptions, SqliteStore, Store};

    fn pool(count: u32) -> IdPool {
        IdPool {
            first: 1_000_000_000,
            size: 65536,
            count,
        }
    }

    #[tokio::test]
    async fn ranges_are_disjoint_kept_per_owner_and_free_again_after_release() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        let a = std::sync::Arc::new(
            SqliteStore::open(&db, OpenOptions::default())
                .await
                .unwrap(),
        );
        let b = std::sync::Arc::new(
            SqliteStore::open(&db, OpenOptions::default())
                .await
                .unwrap(),
        );
        // Two store handles on one file allocate at once: every owner gets a distinct range.
        let mut tasks = Vec::new();
        for i in 0..8 {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move {
                s.allocate_id_range(&format!("c{i}"), pool(8))
                    .await
                    .unwrap()
            }));
        }
        let mut firsts = Vec::new();
        for t in tasks {
            firsts.push(t.await.unwrap().first);
        }
        firsts.sort();
        let want: Vec<u32> = (0..8).map(|i| 1_000_000_000 + i * 65536).collect();
        assert_eq!(firsts, want);
        let err = a.allocate_id_range("c8", pool(8)).await.unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::IdRange(IdRangeError::PoolExhausted { held: 8, .. })
            ),
            "{err}"
        );
        // Idempotent: the owner keeps its range.
        let c3 = a.list_id_ranges(Some("c3")).await.unwrap().remove(0);
        assert_eq!(a.allocate_id_range("c3", pool(8)).await.unwrap(), c3);
        assert!(a.release_id_range("c3").await.unwrap());
        assert!(!a.release_id_range("c3").await.unwrap());
        assert_eq!(
            a.allocate_id_range("c8", pool(8)).await.unwrap().first,
            c3.first
        );
    }

    #[tokio::test]
    async fn a_moved_pool_never_overlaps_a_held_range() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(dir.path().join("s.db"), OpenOptions::default())
            .await
            .unwrap();
        let old = s.allocate_id_range("old", pool(4)).await.unwrap();
        // The operator moved the pool half a range down: the next range starts after `old`.
        let moved = IdPool {
            first: old.first - 32768,
            ..pool(4)
        };
        let new = s.allocate_id_range("new", moved).await.unwrap();
        assert_eq!(new.first, old.first + 65536);
        assert_eq!(s.allocate_id_range("old", moved).await.unwrap(), old);
        assert!(IdPool {
            first: u32::MAX - 10,
            ..pool(1)
        }
        .check()
        .is_err());
        assert!(IdPool::default().check().is_ok());
    }
}
