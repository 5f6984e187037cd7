//! The SQLite store: a pool of reader connections and one writer thread that batches commits.
//!
//! Every connection gets the pragmas of SPEC §2. Reads run on the blocking pool with a pooled
//! connection. Writes never race: they are closures sent to one writer thread, which opens a
//! `BEGIN IMMEDIATE` transaction, runs every job waiting in its queue (each inside its own
//! savepoint, so one failing job rolls back alone), commits once, and only then answers each
//! caller. Many concurrent writers therefore cost one fsync-free WAL commit per batch (group
//! commit) and never see `SQLITE_BUSY` from each other; LiteFS sees few transactions.

pub mod admin_tokens;
pub mod api_keys;
pub mod flag_changes;
pub mod messages;
pub mod migrate;
pub mod organizations;
pub mod run_events;
pub mod runs;
pub mod sessions;
pub mod users;
pub mod workers;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::Connection;
use tokio::sync::oneshot;

/// Pragmas applied to every connection, reader or writer.
const PRAGMAS: &str = "PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
PRAGMA foreign_keys = ON;
PRAGMA busy_timeout = 5000;
PRAGMA temp_store = MEMORY;";

/// Prepared statements kept per connection: more than hearth has, so hot paths never re-parse.
const STATEMENT_CACHE: usize = 256;

/// How many queued write jobs one transaction may take at most.
const MAX_BATCH: usize = 512;

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
    /// The writer thread has stopped (the store is closing).
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

type Deliver = Box<dyn FnOnce(Option<&Arc<rusqlite::Error>>) + Send>;
/// A queued write: given the writer's connection (or the error that kept the transaction from
/// opening), it runs and returns how to answer its caller once the commit outcome is known.
type Job = Box<dyn FnOnce(Result<&Connection, &Arc<rusqlite::Error>>) -> Deliver + Send>;

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Db {
    pool: r2d2::Pool<SqliteConnectionManager>,
    writer: mpsc::Sender<Job>,
    path: Arc<PathBuf>,
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
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("hearth-db-writer".into())
            .spawn(move || writer_loop(&writer_conn, &rx))
            .map_err(|e| open_err(e.to_string()))?;
        Ok(Self { pool, writer: tx, path: Arc::new(path.to_path_buf()) })
    }

    /// The database file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` with a pooled read connection on the blocking pool.
    ///
    /// # Errors
    /// Whatever `f` returns, or a pool/task failure.
    pub async fn read<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, DbError> + Send + 'static,
    {
        let pool = self.pool.clone();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let conn = pool.get()?;
            f(&conn)
        })
        .await
        .map_err(|e| DbError::Task(e.to_string()))?
    }

    /// Runs `f` inside the writer's current transaction and answers once it is committed.
    ///
    /// An error from `f` rolls back `f`'s own changes only; other writes of the batch commit.
    ///
    /// # Errors
    /// Whatever `f` returns, a commit failure, or [`DbError::WriterGone`] after shutdown.
    pub async fn write<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, DbError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let result = match conn {
                Ok(conn) => run_in_savepoint(conn, f),
                Err(e) => Err(DbError::Commit(Arc::clone(e))),
            };
            Box::new(move |commit_error| {
                let answer = match (result, commit_error) {
                    (Ok(_), Some(e)) => Err(DbError::Commit(Arc::clone(e))),
                    (result, _) => result,
                };
                // The caller may have gone away (request cancelled); the write stands.
                let _ = tx.send(answer);
            })
        });
        self.writer.send(job).map_err(|_| DbError::WriterGone)?;
        rx.await.map_err(|_| DbError::WriterGone)?
    }
}

fn run_in_savepoint<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T, DbError>,
) -> Result<T, DbError> {
    conn.prepare_cached("SAVEPOINT job")?.execute([])?;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(conn)))
        .unwrap_or_else(|_| Err(DbError::Task("a write job panicked".into())));
    if result.is_ok() {
        conn.prepare_cached("RELEASE job")?.execute([])?;
    } else {
        conn.execute_batch("ROLLBACK TO job; RELEASE job")?;
    }
    result
}

/// The writer thread: one transaction per batch of queued jobs, until every sender is gone.
fn writer_loop(conn: &Connection, rx: &mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut delivers: Vec<Deliver> = Vec::new();
        let begin = conn.execute_batch("BEGIN IMMEDIATE").map_err(Arc::new);
        if let Err(e) = &begin {
            tracing::error!(error = %e, "database writer could not begin a transaction");
        }
        let mut next = Some(first);
        while let Some(job) = next.take() {
            delivers.push(job(begin.as_ref().map(|()| conn)));
            if delivers.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        let outcome = match begin {
            Ok(()) => conn.execute_batch("COMMIT").map_err(Arc::new),
            Err(e) => Err(e),
        };
        if let Err(e) = &outcome {
            tracing::error!(error = %e, jobs = delivers.len(), "database commit failed");
            let _ = conn.execute_batch("ROLLBACK");
        }
        for deliver in delivers {
            deliver(outcome.as_ref().err());
        }
    }
}

/// Milliseconds since the Unix epoch, the unit of every stored timestamp.
#[must_use]
pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_temp() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db"), 4).unwrap();
        (dir, db)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    #[expect(clippy::disallowed_methods, reason = "the test joins every task it spawns")]
    async fn many_concurrent_writers_never_see_busy() {
        let (_dir, db) = open_temp();
        db.write(|c| Ok(c.execute_batch("CREATE TABLE t (task INTEGER, n INTEGER)")?)).await.unwrap();
        let mut handles = Vec::new();
        for task in 0..64i64 {
            let db = db.clone();
            handles.push(tokio::spawn(async move {
                for n in 0..50i64 {
                    db.write(move |c| {
                        c.execute("INSERT INTO t VALUES (?1, ?2)", [task, n])?;
                        Ok(())
                    })
                    .await?;
                }
                Ok::<(), DbError>(())
            }));
        }
        for handle in handles {
            handle.await.unwrap().unwrap();
        }
        let count: i64 =
            db.read(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?)).await.unwrap();
        assert_eq!(count, 64 * 50);
    }

    #[tokio::test]
    async fn a_failing_job_rolls_back_alone() {
        let (_dir, db) = open_temp();
        db.write(|c| Ok(c.execute_batch("CREATE TABLE t (x INTEGER PRIMARY KEY)")?)).await.unwrap();
        let ok = db.write(|c| Ok(c.execute("INSERT INTO t VALUES (1)", [])?));
        let bad = db.write(|c| {
            c.execute("INSERT INTO t VALUES (2)", [])?;
            c.execute("INSERT INTO t VALUES (1)", [])?; // duplicate: fails this job only
            Ok(())
        });
        let (ok, bad) = tokio::join!(ok, bad);
        assert!(ok.is_ok());
        assert!(bad.is_err());
        let rows: Vec<i64> = db
            .read(|c| {
                let mut stmt = c.prepare("SELECT x FROM t ORDER BY x")?;
                let rows = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
                Ok(rows)
            })
            .await
            .unwrap();
        assert_eq!(rows, vec![1]);
    }

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
    }
}
