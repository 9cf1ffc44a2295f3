//! The inventory database (SQLite, bundled): one connection behind a
//! mutex, a schema version (`PRAGMA user_version`) with migrations applied
//! in a transaction each, and helpers that run a multi-step change in one
//! transaction.

mod schema;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, Transaction};
use thiserror::Error;

use crate::error::{CoreError, Result};

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("Opening the inventory {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("The inventory's schema version {found} is newer than this keeld's ({known}); use a newer keeld")]
    TooNew { found: i64, known: i64 },
    #[error("Migrating the inventory to schema version {version}: {source}")]
    Migrate {
        version: i64,
        source: rusqlite::Error,
    },
}

impl From<StoreError> for CoreError {
    fn from(err: StoreError) -> CoreError {
        CoreError::internal(err.to_string())
    }
}

pub struct Store {
    conn: Mutex<Connection>,
}

/// The schema version this code writes.
#[cfg(test)]
pub fn schema_version() -> i64 {
    schema::MIGRATIONS.len() as i64
}

impl Store {
    /// Opens (or creates) the database and brings its schema up to date.
    /// Returns the store and whether the database was new.
    pub fn open(path: &Path) -> std::result::Result<(Store, bool), StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
        )
        .map_err(open_err)?;
        Self::from_connection(conn, schema::MIGRATIONS)
    }

    fn from_connection(
        mut conn: Connection,
        migrations: &[&str],
    ) -> std::result::Result<(Store, bool), StoreError> {
        let created = migrate(&mut conn, migrations)?;
        Ok((
            Store {
                conn: Mutex::new(conn),
            },
            created,
        ))
    }

    /// An in-memory store (tests).
    #[cfg(test)]
    pub fn memory() -> Store {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("PRAGMA foreign_keys = ON;").unwrap();
        Self::from_connection(conn, schema::MIGRATIONS).unwrap().0
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs reads or a single statement.
    pub fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        Ok(f(&self.lock())?)
    }

    /// Runs `f` in one transaction: committed when it returns Ok, rolled
    /// back otherwise.
    pub fn tx<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let value = f(&tx)?;
        tx.commit()?;
        Ok(value)
    }

    pub fn setting(&self, key: &str) -> Result<Option<String>> {
        self.with(|c| {
            c.query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()
        })
    }

    pub fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO settings (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [key, value],
            )
            .map(drop)
        })
    }
}

/// Applies the migrations the database lacks, each in its own
/// transaction with its version bump. Returns true when the database was
/// empty (version 0).
fn migrate(conn: &mut Connection, migrations: &[&str]) -> std::result::Result<bool, StoreError> {
    let known = migrations.len() as i64;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|source| StoreError::Migrate { version: 0, source })?;
    if version > known {
        return Err(StoreError::TooNew {
            found: version,
            known,
        });
    }
    for (i, sql) in migrations.iter().enumerate().skip(version as usize) {
        let target = i as i64 + 1;
        let err = |source| StoreError::Migrate {
            version: target,
            source,
        };
        let tx = conn.transaction().map_err(err)?;
        tx.execute_batch(sql).map_err(err)?;
        tx.pragma_update(None, "user_version", target)
            .map_err(err)?;
        tx.commit().map_err(err)?;
    }
    Ok(version == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsutil::TestDir;

    #[test]
    fn open_creates_then_reopens_at_the_current_version() {
        let dir = TestDir::new("store");
        let path = dir.path().join("inventory.db");
        let (store, created) = Store::open(&path).unwrap();
        assert!(created);
        let v: i64 = store
            .with(|c| c.query_row("PRAGMA user_version", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(v, schema_version());
        store.set_setting("a", "1").unwrap();
        store.set_setting("a", "2").unwrap();
        drop(store);
        let (store, created) = Store::open(&path).unwrap();
        assert!(!created);
        assert_eq!(store.setting("a").unwrap().as_deref(), Some("2"));
        assert_eq!(store.setting("b").unwrap(), None);
    }

    #[test]
    fn migrations_apply_in_order_and_only_once() {
        let mut conn = Connection::open_in_memory().unwrap();
        let v1 = ["CREATE TABLE a (x INTEGER)"];
        assert!(migrate(&mut conn, &v1).unwrap());
        conn.execute("INSERT INTO a VALUES (1)", []).unwrap();
        let v2 = [
            "CREATE TABLE a (x INTEGER)",
            "ALTER TABLE a ADD COLUMN y TEXT",
        ];
        assert!(!migrate(&mut conn, &v2).unwrap());
        let (x, y): (i64, Option<String>) = conn
            .query_row("SELECT x, y FROM a", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap();
        assert_eq!((x, y), (1, None));
        // Running again changes nothing.
        assert!(!migrate(&mut conn, &v2).unwrap());
        // A database from a newer keeld is refused, not downgraded.
        let err = migrate(&mut conn, &v1).unwrap_err();
        assert!(
            matches!(err, StoreError::TooNew { found: 2, known: 1 }),
            "{err}"
        );
    }

    #[test]
    fn a_failing_migration_leaves_the_previous_version() {
        let mut conn = Connection::open_in_memory().unwrap();
        let bad = ["CREATE TABLE a (x INTEGER)", "CREATE TABLE b (; nonsense"];
        assert!(matches!(
            migrate(&mut conn, &bad),
            Err(StoreError::Migrate { version: 2, .. })
        ));
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, 1);
    }

    #[test]
    fn tx_rolls_back_on_error() {
        let store = Store::memory();
        let res: Result<()> = store.tx(|tx| {
            tx.execute("INSERT INTO settings VALUES ('k', 'v')", [])?;
            Err(CoreError::conflict("no"))
        });
        assert!(res.is_err());
        assert_eq!(store.setting("k").unwrap(), None);
    }
}
