//! The writer's own tests: group commits, savepoints, and honest answers when SQLite rolls a
//! batch back.

use super::*;

use crate::db::open_temp;

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
    let count: i64 = db.read(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?)).await.unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[expect(clippy::disallowed_methods, reason = "the test joins every task it spawns")]
#[expect(clippy::await_holding_lock, reason = "holds the writer on purpose; writers only try_lock it")]
async fn a_failing_first_job_of_a_batch_rolls_back_alone_and_the_rest_commit() {
    let (_dir, db) = open_temp();
    db.write(|c| Ok(c.execute_batch("CREATE TABLE t (x INTEGER PRIMARY KEY)")?)).await.unwrap();
    db.write(|c| Ok(c.execute("INSERT INTO t VALUES (1)", []).map(|_| ())?)).await.unwrap();
    // Hold the writer so the next jobs queue up and run as one batch, in this order.
    let held = db.writer.conn.lock().unwrap();
    let queued = |n: usize| {
        let db = db.clone();
        async move {
            while db.writer.queue.lock().unwrap().len() < n {
                tokio::task::yield_now().await;
            }
        }
    };
    let first = tokio::spawn({
        let db = db.clone();
        async move {
            db.write(|c| {
                c.execute("INSERT INTO t VALUES (2)", [])?;
                c.execute("INSERT INTO t VALUES (1)", [])?; // duplicate: this job fails
                Ok(())
            })
            .await
        }
    });
    queued(1).await;
    let second = tokio::spawn({
        let db = db.clone();
        async move { db.write(|c| Ok(c.execute("INSERT INTO t VALUES (3)", []).map(|_| ())?)).await }
    });
    queued(2).await;
    let third = tokio::spawn({
        let db = db.clone();
        async move {
            db.write(|c| {
                c.execute("INSERT INTO t VALUES (4)", [])?;
                c.execute("INSERT INTO t VALUES (3)", [])?; // fails too, inside a savepoint
                Ok(())
            })
            .await
        }
    });
    queued(3).await;
    let fourth = tokio::spawn({
        let db = db.clone();
        async move { db.write(|c| Ok(c.execute("INSERT INTO t VALUES (5)", []).map(|_| ())?)).await }
    });
    queued(4).await;
    drop(held);
    db.writer.lead();
    assert!(first.await.unwrap().is_err());
    assert!(second.await.unwrap().is_ok());
    assert!(third.await.unwrap().is_err());
    assert!(fourth.await.unwrap().is_ok());
    let rows: Vec<i64> = db
        .read(|c| {
            let mut stmt = c.prepare("SELECT x FROM t ORDER BY x")?;
            let rows = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
        .unwrap();
    assert_eq!(rows, vec![1, 3, 5]);
}

/// A fresh store with one table `t (x INTEGER)`, created by a write of its own.
async fn store_with_table(name: &str) -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join(name), 2).unwrap();
    db.write(|c| Ok(c.execute_batch("CREATE TABLE t (x INTEGER)")?)).await.unwrap();
    (dir, db)
}

#[tokio::test]
async fn commits_count_write_batches_and_not_reads() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("c.db"), 2).unwrap();
    let start = db.commits();
    db.write(|c| Ok(c.execute_batch("CREATE TABLE t (x INTEGER)")?)).await.unwrap();
    db.write(|c| Ok(c.execute("INSERT INTO t VALUES (1)", []).map(|_| ())?)).await.unwrap();
    assert_eq!(db.commits(), start + 2);
    let n: i64 = db.read(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?)).await.unwrap();
    assert_eq!((n, db.commits()), (1, start + 2), "a read is not a commit");
    let n: i64 =
        db.read_on_writer(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?)).await.unwrap();
    assert_eq!((n, db.commits()), (1, start + 2), "nor is a read on the writer's connection");
}

#[tokio::test(flavor = "current_thread")]
#[expect(clippy::disallowed_methods, reason = "the test joins every task it spawns")]
async fn writes_ready_on_one_thread_at_once_share_one_commit() {
    let (_dir, db) = store_with_table("g.db").await;
    let (start, writes) = (db.commits(), db.writes());
    let tasks: Vec<_> = (0..10i64)
        .map(|x| {
            let db = db.clone();
            tokio::spawn(async move {
                db.write(move |c| Ok(c.execute("INSERT INTO t VALUES (?1)", [x]).map(|_| ())?)).await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(db.commits(), start + 1, "ten writes ready together, one commit");
    assert_eq!(db.writes(), writes + 10, "which carried ten writes");
    let n: i64 = db.read(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?)).await.unwrap();
    assert_eq!(n, 10);
}

#[tokio::test(flavor = "current_thread")]
async fn a_write_whose_caller_goes_away_while_it_waits_still_commits() {
    use futures::FutureExt;
    let (_dir, db) = store_with_table("d.db").await;
    let write = db.write(|c| Ok(c.execute("INSERT INTO t VALUES (7)", []).map(|_| ())?));
    // Polled once (queued, yielding to other tasks), then dropped: the request went away.
    assert!(write.now_or_never().is_none(), "the write yields before it leads");
    let n: i64 = db.read(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?)).await.unwrap();
    assert_eq!(n, 1, "the queued write committed without another write to lead it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[expect(clippy::disallowed_methods, reason = "the test joins every task it spawns")]
async fn reads_on_the_writer_see_every_acknowledged_write_and_never_commit() {
    let (_dir, db) = store_with_table("r.db").await;
    let start = db.commits();
    let mut tasks = Vec::new();
    for i in 0..4 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            for j in 0..50 {
                let x = i * 100 + j;
                db.write(move |c| Ok(c.execute("INSERT INTO t VALUES (?1)", [x]).map(|_| ())?))
                    .await
                    .unwrap();
                let seen: i64 = db
                    .read_on_writer(move |c| {
                        Ok(c.query_row("SELECT count(*) FROM t WHERE x = ?1", [x], |r| r.get(0))?)
                    })
                    .await
                    .unwrap();
                assert_eq!(seen, 1, "write {x} read back");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let failed =
        db.read_on_writer(|c| Ok(c.query_row("SELECT nope FROM t", [], |r| r.get::<_, i64>(0))?)).await;
    assert!(failed.is_err(), "a failing read answers its error");
    let n: i64 = db.read(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?)).await.unwrap();
    assert_eq!(n, 200);
    assert!(db.commits() - start <= 200, "reads never commit");
    let before = db.commits();
    for _ in 0..20 {
        db.read_on_writer(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?)).await.unwrap();
    }
    assert_eq!(db.commits(), before, "a batch of reads alone is no commit");
    let autocommit = db.read_on_writer(|c| Ok(c.is_autocommit())).await.unwrap();
    assert!(!autocommit, "reads run inside one transaction, not one per statement");
}

/// One write job, boxed.
type Job1 = Box<dyn FnOnce(&Connection) -> Result<(), DbError> + Send>;

/// Queues `jobs` for the writer while it is held, in order, then lets one batch run them all;
/// returns each job's answer.
#[expect(clippy::disallowed_methods, reason = "the helper joins every task it spawns")]
#[expect(clippy::await_holding_lock, reason = "holds the writer on purpose; writers only try_lock it")]
async fn one_batch(db: &Db, jobs: Vec<Job1>) -> Vec<bool> {
    let held = db.writer.conn.lock().unwrap();
    let mut handles = Vec::new();
    for (i, job) in jobs.into_iter().enumerate() {
        let db2 = db.clone();
        handles.push(tokio::spawn(async move { db2.write(job).await }));
        while db.writer.queue.lock().unwrap().len() < i + 1 {
            tokio::task::yield_now().await;
        }
    }
    drop(held);
    db.writer.lead();
    let mut answers = Vec::new();
    for handle in handles {
        answers.push(handle.await.unwrap().is_ok());
    }
    answers
}

async fn rows(db: &Db) -> Vec<i64> {
    db.read(|c| {
        let mut stmt = c.prepare("SELECT x FROM t ORDER BY x")?;
        let rows = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
        Ok(rows)
    })
    .await
    .unwrap()
}

fn insert(x: i64) -> Job1 {
    Box::new(move |c| Ok(c.execute("INSERT INTO t (x) VALUES (?1)", [x]).map(|_| ())?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_sqlite_rolls_the_whole_batch_back_its_jobs_are_answered_failed_and_later_ones_honestly() {
    let (_dir, db) = open_temp();
    db.write(|c| Ok(c.execute_batch("CREATE TABLE t (x INTEGER PRIMARY KEY)")?)).await.unwrap();
    // The third job ends the transaction as SQLite does on its own after SQLITE_FULL or an
    // I/O error in the middle of a statement.
    let rolled_back: Job1 = Box::new(|c| {
        c.execute("INSERT INTO t (x) VALUES (3)", [])?;
        c.execute_batch("ROLLBACK")?;
        Err(DbError::Task("disk full".into()))
    });
    let answers = one_batch(&db, vec![insert(1), insert(2), rolled_back, insert(4), insert(5)]).await;
    let stored = rows(&db).await;
    assert_eq!(stored, vec![4, 5], "what stands");
    assert_eq!(answers, vec![false, false, false, true, true], "answers must match what stands");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_full_disk_every_answer_matches_what_was_stored() {
    let (_dir, db) = open_temp();
    db.write(|c| Ok(c.execute_batch("CREATE TABLE t (x INTEGER PRIMARY KEY, pad BLOB)")?)).await.unwrap();
    // A disk with room for a few more pages only (PRAGMA max_page_count), as cheap as disk full gets.
    db.write(|c| {
        let pages: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        c.query_row(&format!("PRAGMA max_page_count = {}", pages + 4), [], |_| Ok(()))?;
        Ok(())
    })
    .await
    .unwrap();
    let big = |x: i64| -> Job1 {
        Box::new(move |c| {
            Ok(c.execute("INSERT INTO t (x, pad) VALUES (?1, zeroblob(200000))", [x]).map(|_| ())?)
        })
    };
    let answers = one_batch(&db, vec![insert(1), insert(2), big(3), insert(4), big(5), insert(6)]).await;
    let stored = rows(&db).await;
    assert!(answers.contains(&false), "the disk never filled: {answers:?}");
    for (i, ok) in answers.iter().enumerate() {
        let x = i64::try_from(i).unwrap() + 1;
        assert_eq!(*ok, stored.contains(&x), "job {x}: answered ok={ok} but stored={stored:?}");
    }
}

#[tokio::test]
async fn write_failures_of_the_storage_are_reported_until_a_batch_commits_again() {
    let (_dir, db) = open_temp();
    db.write(|c| Ok(c.execute_batch("CREATE TABLE t (x INTEGER PRIMARY KEY, pad BLOB)")?)).await.unwrap();
    assert_eq!(db.write_failure(), None);
    // A job failing for its own reasons says nothing of the storage.
    let own = db.write(|c| Ok(c.execute("INSERT INTO nowhere VALUES (1)", []).map(|_| ())?)).await;
    assert!(own.is_err());
    assert_eq!(db.write_failure(), None, "a bad statement is not a storage failure");
    db.write(|c| {
        let pages: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        c.query_row(&format!("PRAGMA max_page_count = {}", pages + 2), [], |_| Ok(()))?;
        Ok(())
    })
    .await
    .unwrap();
    let full =
        db.write(|c| Ok(c.execute("INSERT INTO t VALUES (1, zeroblob(100000))", []).map(|_| ())?)).await;
    assert!(full.as_ref().is_err_and(DbError::is_transient), "{full:?}");
    let why = db.write_failure().unwrap_or_default();
    assert!(why.contains("full"), "{why}");
    db.write(|c| {
        c.query_row("PRAGMA max_page_count = 1000000", [], |_| Ok(()))?;
        Ok(c.execute("INSERT INTO t VALUES (2, zeroblob(100000))", []).map(|_| ())?)
    })
    .await
    .unwrap();
    assert_eq!(db.write_failure(), None, "a commit clears it");
}
