//! The SQLite store: a pool of reader connections and one writer connection that batches commits.
//!
//! Every connection gets the pragmas of SPEC §2. Reads run on the caller's thread with a pooled
//! connection, or, when they follow writes closely, on the writer's connection
//! ([`Db::read_on_writer`]: its cache is never stale). Writes are closures queued for the one
//! writer connection, committed in batches ([`writer`]); a background policy copies the WAL back
//! into the database file ([`checkpoint`]). Each table's SQL is in its own file, on the helpers
//! of [`sql`].

pub mod admin_sessions;
pub mod admin_tokens;
pub mod api_keys;
pub mod checkpoint;
pub mod flag_changes;
pub mod idempotency_keys;
pub mod mcp_signing_keys;
pub mod messages;
pub mod migrate;
pub mod organizations;
pub mod run_events;
pub mod run_stats;
pub mod runs;
pub mod schema_floor;
pub mod session_search;
pub mod sessions;
pub mod sql;
pub mod users;
pub mod worker_tokens;
pub mod workers;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::Connection;

pub use sql::{JsonText, ROWS_PER_INSERT, RowsInsert, now_ms};
use writer::Writer;

/// Pragmas applied to every connection, reader or writer. `page_size` takes effect only on a
/// new, empty file (before WAL mode is set); an existing database keeps its page size. 2 KiB
/// pages halve the bytes every commit checksums, copies and writes to the WAL (a commit
/// rewrites each page it touches, whole) for hearth's small rows; measured in
/// docs/PERFORMANCE.md. LiteFS and Litestream handle any page size.
const PRAGMAS: &str = "PRAGMA page_size = 2048;
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
PRAGMA foreign_keys = ON;
PRAGMA busy_timeout = 5000;
PRAGMA temp_store = MEMORY;";

/// Prepared statements kept per connection: more than hearth has, so hot paths never re-parse.
///
/// A bare `LIMIT ?` would defeat the cache: SQLite re-prepares such a statement every time it is
/// run with a new binding (the limit can change its plan), so hearth writes `LIMIT +?N`. A test
/// in `sql.rs` shows the difference, and another checks no `LIMIT ?` comes back.
const STATEMENT_CACHE: usize = 256;

/// Failures of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite refused or failed a statement.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// No pooled connection could be had.
    #[error("connection pool: {0}")]
    Pool(#[from] r2d2::Error),
    /// A stored JSON column did not parse.
    #[error("stored JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The batch this write belonged to failed to commit.
    #[error("commit failed: {0}")]
    Commit(Arc<rusqlite::Error>),
    /// The write was dropped before it ran (the store is closing).
    #[error("the database writer has stopped")]
    WriterGone,
    /// A blocking task panicked or was cancelled.
    #[error("database task failed: {0}")]
    Task(String),
    /// Opening the database file failed.
    #[error("cannot open database {path}: {reason}")]
    Open {
        /// The file that could not be opened.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl DbError {
    /// Whether the failure is of the storage rather than of the request or of hearth — busy,
    /// locked, full, read-only, an I/O error, the store closing — so that the same request may
    /// well succeed when tried again shortly.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        use rusqlite::ErrorCode as C;
        let code = match self {
            Self::Sqlite(e) => e.sqlite_error_code(),
            Self::Commit(e) => e.sqlite_error_code(),
            Self::Pool(_) | Self::WriterGone | Self::Open { .. } => return true,
            Self::Json(_) | Self::Task(_) => return false,
        };
        matches!(
            code,
            Some(
                C::DatabaseBusy
                    | C::DatabaseLocked
                    | C::DiskFull
                    | C::SystemIoFailure
                    | C::ReadOnly
                    | C::CannotOpen
                    | C::OutOfMemory
                    | C::OperationAborted
            )
        )
    }
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Db {
    pool: r2d2::Pool<SqliteConnectionManager>,
    writer: Arc<Writer>,
}

impl Db {
    /// Opens (creating if needed) the database at `path` with `readers` pooled read connections.
    ///
    /// # Errors
    /// When the directory or the file cannot be created or opened.
    pub fn open(path: &Path, readers: u32) -> Result<Self, DbError> {
        let open_err = |reason: String| DbError::Open { path: path.to_path_buf(), reason };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
        }
        let writer_conn = Connection::open(path).map_err(|e| open_err(e.to_string()))?;
        writer_conn.execute_batch(PRAGMAS).map_err(|e| open_err(e.to_string()))?;
        writer_conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        // Commits run on request threads: they must not also copy the WAL back into the database
        // now and then. `checkpoint` does that in the background instead.
        // Once the log starts over, its file is cut back to this size (bytes).
        writer_conn
            .execute_batch("PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = 67108864")
            .map_err(|e| open_err(e.to_string()))?;
        let manager = SqliteConnectionManager::file(path).with_init(|c| {
            c.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
            c.execute_batch(PRAGMAS)
        });
        let pool = r2d2::Pool::builder()
            .max_size(readers.max(1))
            .min_idle(Some(1))
            .connection_timeout(Duration::from_secs(10))
            .build(manager)
            .map_err(|e| open_err(e.to_string()))?;
        let writer = Arc::new(Writer::new(writer_conn));
        Ok(Self { pool, writer })
    }

    /// Runs `f` with a pooled read connection. Reads in WAL mode never wait on writers, and
    /// hearth's reads are short indexed lookups, so they run on the caller's thread: a hand-off
    /// to another thread would cost more than the read.
    ///
    /// # Errors
    /// Whatever `f` returns, or a pool failure.
    pub async fn read<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, DbError> + Send + 'static,
    {
        let conn = self.pool.get()?;
        f(&conn)
    }
}

/// An in-memory database at the latest schema with foreign keys off, for tests of one table's
/// SQL on its own (no parent rows to point at).
#[cfg(test)]
pub(crate) fn bare_schema() -> Connection {
    let conn = Connection::open_in_memory().unwrap();
    migrate::migrate_to(&conn, None).unwrap();
    conn.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
    conn
}

/// A store in a fresh temporary directory, for tests (keep the directory alive).
#[cfg(test)]
pub(crate) fn open_temp() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("t.db"), 4).unwrap();
    (dir, db)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_connection_has_the_pragmas() {
        let (_dir, db) = open_temp();
        let (mode, fk, timeout, sync): (String, i64, i64, i64) = db
            .read(|c| {
                Ok((
                    c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?,
                    c.query_row("PRAGMA foreign_keys", [], |r| r.get(0))?,
                    c.query_row("PRAGMA busy_timeout", [], |r| r.get(0))?,
                    c.query_row("PRAGMA synchronous", [], |r| r.get(0))?,
                ))
            })
            .await
            .unwrap();
        assert_eq!((mode.as_str(), fk, sync), ("wal", 1, 1));
        assert!(timeout >= 5000);
        let page: i64 = db.read(|c| Ok(c.query_row("PRAGMA page_size", [], |r| r.get(0))?)).await.unwrap();
        assert_eq!(page, 2048, "a new database gets 2 KiB pages");
    }

    #[tokio::test]
    async fn an_existing_database_keeps_its_page_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let old = Connection::open(&path).unwrap();
            old.execute_batch(
                "PRAGMA page_size = 4096; PRAGMA journal_mode = WAL; CREATE TABLE t (x INTEGER)",
            )
            .unwrap();
            old.execute("INSERT INTO t VALUES (7)", []).unwrap();
        }
        let db = Db::open(&path, 2).unwrap();
        db.write(|c| Ok(c.execute("INSERT INTO t VALUES (8)", []).map(|_| ())?)).await.unwrap();
        let (page, sum): (i64, i64) = db
            .read(|c| {
                Ok((
                    c.query_row("PRAGMA page_size", [], |r| r.get(0))?,
                    c.query_row("SELECT sum(x) FROM t", [], |r| r.get(0))?,
                ))
            })
            .await
            .unwrap();
        assert_eq!((page, sum), (4096, 15));
        let ok: String =
            db.read(|c| Ok(c.query_row("PRAGMA integrity_check", [], |r| r.get(0))?)).await.unwrap();
        assert_eq!(ok, "ok");
    }
}
