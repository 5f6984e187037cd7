//! Embedded, numbered, append-only migrations tracked by `PRAGMA user_version`.
//!
//! Migration N (1-based) lives in `migrations/000N_….sql`; a database at `user_version = N` has
//! applied the first N. Each migration and its version bump commit together, so a crash leaves
//! the database at a whole version. Run only on the primary (or a standalone node).
//!
//! Rollbacks: from 0010 on every migration declares on its first line whether it is
//! `additive` or `breaking` ([`schema_floor`]); a breaking one raises the database's floor, the
//! lowest schema version a binary must know to open it. A binary older than the database starts
//! when its newest migration is at or above the floor ([`SchemaState::Readable`]), and refuses
//! below it ([`SchemaState::Ahead`], [`too_new`]).

use rusqlite::Connection;

use super::{DbError, schema_floor};

/// Every migration, in order. Append only: never edit or reorder a released entry.
pub const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_identity", include_str!("../../migrations/0001_identity.sql")),
    ("0002_runs", include_str!("../../migrations/0002_runs.sql")),
    ("0003_workers", include_str!("../../migrations/0003_workers.sql")),
    ("0004_held_runs_index", include_str!("../../migrations/0004_held_runs_index.sql")),
    ("0005_user_sessions_index", include_str!("../../migrations/0005_user_sessions_index.sql")),
    ("0006_runs_status_check", include_str!("../../migrations/0006_runs_status_check.sql")),
    ("0007_worker_tokens", include_str!("../../migrations/0007_worker_tokens.sql")),
    ("0010_schema_floor", include_str!("../../migrations/0010_schema_floor.sql")),
    ("0011_idempotency_keys", include_str!("../../migrations/0011_idempotency_keys.sql")),
    ("0012_admin", include_str!("../../migrations/0012_admin.sql")),
    ("0013_mcp_signing_keys", include_str!("../../migrations/0013_mcp_signing_keys.sql")),
];

/// The migration that brought the rollback floor: it and every later one declare their
/// [`schema_floor::Compat`] on their first line (a unit test checks).
pub const FIRST_DECLARED: &str = "0010_schema_floor";

/// The schema version this binary expects.
#[must_use]
pub fn latest_version() -> i64 {
    i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX)
}

/// The schema version recorded in the database.
///
/// # Errors
/// When the pragma cannot be read.
pub fn schema_version(conn: &Connection) -> Result<i64, DbError> {
    Ok(conn.query_row("PRAGMA user_version", [], |row| row.get(0))?)
}

/// Where a database stands relative to this binary's migrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaState {
    /// Every migration is applied.
    Current,
    /// `applied` of `latest` migrations are applied; the rest are pending.
    Behind {
        /// Migrations already applied.
        applied: i64,
        /// Migrations this binary has.
        latest: i64,
    },
    /// The database was migrated by a newer hearth whose further migrations were all additive:
    /// this binary may serve it (and migrates nothing).
    Readable {
        /// The database's version.
        found: i64,
        /// The newest version this binary knows.
        latest: i64,
    },
    /// The database was migrated by a newer hearth past a breaking migration this binary
    /// cannot read: it must not open it ([`too_new`] says what to do).
    Ahead {
        /// The database's version.
        found: i64,
        /// The newest version this binary knows.
        latest: i64,
    },
}

/// Compares the database's version with this binary's.
///
/// # Errors
/// When the version cannot be read.
pub fn state(conn: &Connection) -> Result<SchemaState, DbError> {
    let found = schema_version(conn)?;
    let latest = latest_version();
    Ok(match found.cmp(&latest) {
        std::cmp::Ordering::Equal => SchemaState::Current,
        std::cmp::Ordering::Less => SchemaState::Behind { applied: found, latest },
        // No floor recorded: nothing says the newer schema is readable.
        std::cmp::Ordering::Greater => match schema_floor::read_floor(conn)? {
            Some(floor) if floor <= latest => SchemaState::Readable { found, latest },
            _ => SchemaState::Ahead { found, latest },
        },
    })
}

/// What to tell the operator when the database is [`SchemaState::Ahead`] of this binary.
#[must_use]
pub fn too_new(found: i64, latest: i64) -> String {
    format!(
        "the database is at schema version {found}, and a migration since version {latest} (the \
         newest this hearth knows) changed it in a way this hearth cannot read. Roll forward \
         (deploy the newer hearth again), or restore the database from a backup taken before the \
         upgrade (`litestream restore`, docs/DEPLOY.md \"Rolling back\")"
    )
}

/// Applies the pending migrations up to `target` (all of them when `None`); returns the names
/// of those applied. Idempotent: a current database is left untouched.
///
/// # Errors
/// When a migration fails (its transaction is rolled back) or the database is newer than this
/// binary.
pub fn migrate_to(conn: &Connection, target: Option<i64>) -> Result<Vec<&'static str>, DbError> {
    let target = target.unwrap_or_else(latest_version);
    let mut applied = Vec::new();
    loop {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        // Read the version inside the write lock so two migrating processes cannot interleave.
        let step = next_step(conn, target);
        let outcome = step.and_then(|step| match step {
            Some((version, name, sql)) => {
                conn.execute_batch(sql)?;
                schema_floor::record(conn, version, schema_floor::declared(sql))?;
                // A migration may edit `sqlite_schema` directly (0006, SQLite's documented way
                // to change a CHECK); bumping the schema cookie makes every connection re-read
                // the schema. For an ordinary migration it is one more harmless increment.
                let cookie: i64 = conn.query_row("PRAGMA schema_version", [], |r| r.get(0))?;
                conn.pragma_update(None, "schema_version", cookie + 1)?;
                conn.pragma_update(None, "user_version", version)?;
                Ok(Some(name))
            }
            None => Ok(None),
        });
        match outcome {
            Ok(Some(name)) => {
                conn.execute_batch("COMMIT")?;
                applied.push(name);
            }
            Ok(None) => {
                conn.execute_batch("COMMIT")?;
                return Ok(applied);
            }
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        }
    }
}

type Step = (i64, &'static str, &'static str);

fn next_step(conn: &Connection, target: i64) -> Result<Option<Step>, DbError> {
    let version = schema_version(conn)?;
    match state(conn)? {
        SchemaState::Ahead { found, latest } => {
            return Err(DbError::Open {
                path: conn.path().unwrap_or_default().into(),
                reason: too_new(found, latest),
            });
        }
        SchemaState::Readable { .. } => return Ok(None),
        SchemaState::Current | SchemaState::Behind { .. } => {}
    }
    if version >= target {
        return Ok(None);
    }
    let index = usize::try_from(version).unwrap_or(usize::MAX);
    Ok(MIGRATIONS.get(index).map(|(name, sql)| (version + 1, *name, *sql)))
}

/// The schema as SQLite reports it (every object's SQL, sorted): what "the same schema" means.
///
/// # Errors
/// When `sqlite_master` cannot be read.
pub fn schema_fingerprint(conn: &Connection) -> Result<Vec<String>, DbError> {
    let mut stmt = conn.prepare(
        "SELECT type || ' ' || name || ' ' || tbl_name || ' ' || coalesce(sql, '')
         FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name",
    )?;
    let rows = stmt.query_map([], |row| row.get::<_, String>(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("PRAGMA foreign_keys = ON").unwrap();
        conn
    }

    #[test]
    fn migrating_twice_changes_nothing() {
        let conn = memory();
        assert_eq!(migrate_to(&conn, None).unwrap().len(), MIGRATIONS.len());
        let before = schema_fingerprint(&conn).unwrap();
        assert!(migrate_to(&conn, None).unwrap().is_empty());
        assert_eq!(schema_fingerprint(&conn).unwrap(), before);
        assert_eq!(state(&conn).unwrap(), SchemaState::Current);
    }

    #[test]
    fn upgrading_from_every_older_version_equals_a_fresh_database() {
        let fresh = memory();
        migrate_to(&fresh, None).unwrap();
        let expected = schema_fingerprint(&fresh).unwrap();
        for start in 0..latest_version() {
            let conn = memory();
            migrate_to(&conn, Some(start)).unwrap();
            assert_eq!(schema_version(&conn).unwrap(), start);
            assert_eq!(
                state(&conn).unwrap(),
                SchemaState::Behind { applied: start, latest: latest_version() }
            );
            migrate_to(&conn, None).unwrap();
            assert_eq!(schema_fingerprint(&conn).unwrap(), expected, "upgrade from version {start}");
        }
    }

    #[test]
    fn a_database_from_a_newer_hearth_is_refused() {
        let conn = memory();
        conn.pragma_update(None, "user_version", latest_version() + 1).unwrap();
        assert!(matches!(state(&conn).unwrap(), SchemaState::Ahead { .. }));
        assert!(migrate_to(&conn, None).is_err());
    }

    #[test]
    fn every_migration_since_the_floor_declares_whether_it_is_additive() {
        let first = MIGRATIONS.iter().position(|(name, _)| *name == FIRST_DECLARED).unwrap();
        for (name, sql) in &MIGRATIONS[first..] {
            assert!(
                schema_floor::declared(sql).is_some(),
                "migrations/{name}.sql must open with `-- compat: additive` or `-- compat: breaking` \
                 (docs/DEPLOY.md \"Rolling back\")"
            );
        }
    }

    #[test]
    fn a_newer_additive_schema_is_readable_and_a_breaking_one_is_not() {
        let conn = memory();
        migrate_to(&conn, None).unwrap();
        let latest = latest_version();
        // What a newer release's additive migration leaves: a higher version, the same floor.
        conn.execute_batch("CREATE TABLE from_the_future (x)").unwrap();
        conn.pragma_update(None, "user_version", latest + 1).unwrap();
        assert_eq!(state(&conn).unwrap(), SchemaState::Readable { found: latest + 1, latest });
        assert!(migrate_to(&conn, None).unwrap().is_empty(), "nothing to apply, no error");
        // A breaking one raises the floor above this binary.
        schema_floor::record(&conn, latest + 1, Some(schema_floor::Compat::Breaking)).unwrap();
        assert_eq!(state(&conn).unwrap(), SchemaState::Ahead { found: latest + 1, latest });
        let refused = migrate_to(&conn, None).unwrap_err().to_string();
        assert!(refused.contains("Roll forward") && refused.contains("litestream restore"), "{refused}");
    }

    #[test]
    fn a_failing_migration_leaves_the_previous_version() {
        let conn = memory();
        migrate_to(&conn, Some(1)).unwrap();
        // Sabotage step 2 by occupying one of the names it creates.
        conn.execute_batch("CREATE TABLE agent_sessions (x)").unwrap();
        assert!(migrate_to(&conn, None).is_err());
        assert_eq!(schema_version(&conn).unwrap(), 1);
    }

    fn runs_sql(conn: &Connection) -> String {
        conn.query_row("SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'runs'", [], |r| {
            r.get(0)
        })
        .unwrap()
    }

    fn insert_run(conn: &Connection, id: &str, status: &str) -> rusqlite::Result<usize> {
        conn.execute(
            "INSERT INTO runs (id, session_id, organization_id, status, runner, resolved_profile, input,
                               created_at, updated_at)
             VALUES (?1, 'ses_1', 'org_1', ?2, 'embedded', '{}', '{}', 1, 1)",
            [id, status],
        )
    }

    /// Temporary b-trees a statement opens each time it runs (what a long constant `IN` costs).
    fn ephemeral_tables(conn: &Connection, sql: &str) -> usize {
        let mut stmt = conn.prepare(&format!("EXPLAIN {sql}")).unwrap();
        let ops = stmt.query_map([], |r| r.get::<_, String>(1)).unwrap();
        ops.filter(|op| op.as_deref().is_ok_and(|op| op == "OpenEphemeral")).count()
    }

    const RUN_WRITES: [&str; 2] = [
        "INSERT INTO runs (id, session_id, organization_id, status, runner, resolved_profile, input,
                           created_at, updated_at) VALUES ('r', 's', 'o', 'queued', 'x', '{}', '{}', 1, 1)",
        "UPDATE runs SET status = 'completed' WHERE id = 'r'",
    ];

    fn seed(conn: &Connection) {
        conn.execute_batch(
            "INSERT INTO organizations (id, slug, name, created_at, updated_at) VALUES ('org_1', 'o', 'O', 1, 1);
             INSERT INTO agent_sessions (id, organization_id, status, created_at, updated_at)
             VALUES ('ses_1', 'org_1', 'idle', 1, 1);",
        )
        .unwrap();
    }

    #[test]
    fn the_runs_status_check_is_rewritten_and_still_holds() {
        let conn = memory();
        migrate_to(&conn, None).unwrap();
        let sql = runs_sql(&conn);
        assert!(!sql.contains("status IN"), "0006 did not rewrite the CHECK: {sql}");
        assert!(sql.contains("status = 'cancelled'"), "{sql}");
        seed(&conn);
        for (i, status) in
            ["queued", "claimed", "running", "completed", "failed", "cancelled"].iter().enumerate()
        {
            insert_run(&conn, &format!("run_{i}"), status).unwrap();
        }
        let refused = insert_run(&conn, "run_x", "finished").unwrap_err();
        assert!(refused.to_string().contains("CHECK constraint failed"), "{refused}");
        let refused = conn.execute("UPDATE runs SET status = 'paused' WHERE id = 'run_0'", []).unwrap_err();
        assert!(refused.to_string().contains("CHECK constraint failed"), "{refused}");
        assert_eq!(conn.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0)).unwrap(), "ok");
    }

    #[test]
    fn the_check_rewrite_keeps_rows_and_reaches_open_connections() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        let conn = Connection::open(&path).unwrap();
        migrate_to(&conn, Some(5)).unwrap();
        seed(&conn);
        insert_run(&conn, "run_old", "completed").unwrap();
        // Another connection that has already read the old schema, as a pooled reader would.
        let other = Connection::open(&path).unwrap();
        assert!(runs_sql(&other).contains("status IN"));
        assert!(
            RUN_WRITES.iter().all(|sql| ephemeral_tables(&other, sql) > 0),
            "the old CHECK built a temporary table"
        );
        migrate_to(&conn, None).unwrap();
        let status: String =
            other.query_row("SELECT status FROM runs WHERE id = 'run_old'", [], |r| r.get(0)).unwrap();
        assert_eq!(status, "completed");
        for sql in RUN_WRITES {
            assert_eq!(ephemeral_tables(&other, sql), 0, "the other connection kept the old schema: {sql}");
        }
        let refused = insert_run(&other, "run_bad", "nope").unwrap_err();
        assert!(refused.to_string().contains("CHECK constraint failed"), "{refused}");
    }
}
