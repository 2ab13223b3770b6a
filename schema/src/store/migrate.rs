//! Versioned schema migrations: SQL files under `schema/migrations/`, applied in order at open.

use super::{Result, StoreError};
use rusqlite::Connection;
use std::path::Path;

/// Migrations in order; the schema version is the number applied (`PRAGMA user_version`).
const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_init", include_str!("../../migrations/0001_init.sql")),
    (
        "0002_leases",
        include_str!("../../migrations/0002_leases.sql"),
    ),
    (
        "0003_revisions",
        include_str!("../../migrations/0003_revisions.sql"),
    ),
    (
        "0004_id_ranges",
        include_str!("../../migrations/0004_id_ranges.sql"),
    ),
];

/// The schema version this binary writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database up to `SCHEMA_VERSION`, each migration in its own transaction.
/// Refuses a database written by a newer tend instead of guessing at its layout.
pub fn migrate(conn: &mut Connection, path: &Path) -> Result<()> {
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            path: path.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (i, (name, sql)) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)?;
        // Re-check inside the lock: another process may have migrated meanwhile.
        let now: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if now > i as i64 {
            continue;
        }
        tracing::info!(migration = name, "applying schema migration");
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}
