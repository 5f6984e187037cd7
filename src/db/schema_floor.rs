//! The rollback floor (`schema_floor`, migration 0010): the lowest schema version a hearth
//! binary must know to open this database. Breaking migrations raise it to their own version;
//! additive ones leave it, so the binary of the release before still starts after them
//! (docs/DEPLOY.md "Rolling back").

use rusqlite::{Connection, OptionalExtension};

use super::DbError;

/// How a migration changes what older binaries can do with the database, as its first line
/// declares (`-- compat: additive` or `-- compat: breaking`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compat {
    /// Adds tables, columns with defaults or indexes: a binary that does not know it still
    /// reads and writes the database correctly.
    Additive,
    /// Changes or removes what older binaries use: they must not open the database after it.
    Breaking,
}

/// What a migration's SQL declares on its first line; `None` when it declares nothing
/// (migrations before 0010 predate the rule and are never asked).
#[must_use]
pub fn declared(sql: &str) -> Option<Compat> {
    let first = sql.lines().next()?.trim();
    match first.strip_prefix("-- compat:")?.trim() {
        "additive" => Some(Compat::Additive),
        "breaking" => Some(Compat::Breaking),
        _ => None,
    }
}

/// The recorded floor, or `None` when the database has no `schema_floor` table (it was never
/// migrated past 0010, or not at all).
///
/// # Errors
/// When SQLite fails.
pub fn read_floor(conn: &Connection) -> Result<Option<i64>, DbError> {
    if !has_table(conn)? {
        return Ok(None);
    }
    Ok(conn
        .query_row("SELECT min_reader_version FROM schema_floor WHERE id = 1", [], |r| r.get(0))
        .optional()?)
}

/// Records that migration `version`, declared `compat`, was just applied (inside its
/// transaction): a breaking one raises the floor to `version`; an additive one (or one applied
/// before the table exists) changes nothing. An undeclared migration counts as breaking.
///
/// # Errors
/// When SQLite fails.
pub fn record(conn: &Connection, version: i64, compat: Option<Compat>) -> Result<(), DbError> {
    if compat == Some(Compat::Additive) || !has_table(conn)? {
        return Ok(());
    }
    conn.execute(
        "INSERT INTO schema_floor (id, min_reader_version) VALUES (1, ?1)
         ON CONFLICT (id) DO UPDATE SET min_reader_version = max(min_reader_version, excluded.min_reader_version)",
        [version],
    )?;
    Ok(())
}

fn has_table(conn: &Connection) -> Result<bool, DbError> {
    Ok(conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'schema_floor')",
        [],
        |r| r.get(0),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_line_declares() {
        assert_eq!(declared("-- compat: additive\nCREATE TABLE t (x);"), Some(Compat::Additive));
        assert_eq!(declared("-- compat: breaking\n"), Some(Compat::Breaking));
        assert_eq!(declared("-- 0001: identity\n-- compat: additive"), None, "only the first line counts");
        assert_eq!(declared("-- compat: maybe"), None);
    }

    #[test]
    fn breaking_raises_the_floor_and_additive_leaves_it() {
        let conn = Connection::open_in_memory().unwrap();
        record(&conn, 3, Some(Compat::Breaking)).unwrap();
        assert_eq!(read_floor(&conn).unwrap(), None, "no table yet: nothing recorded");
        conn.execute_batch(
            "CREATE TABLE schema_floor (id INTEGER PRIMARY KEY CHECK (id = 1), min_reader_version INTEGER NOT NULL);
             INSERT INTO schema_floor VALUES (1, 0);",
        )
        .unwrap();
        record(&conn, 11, Some(Compat::Additive)).unwrap();
        assert_eq!(read_floor(&conn).unwrap(), Some(0));
        record(&conn, 12, Some(Compat::Breaking)).unwrap();
        assert_eq!(read_floor(&conn).unwrap(), Some(12));
        record(&conn, 13, None).unwrap();
        assert_eq!(read_floor(&conn).unwrap(), Some(13), "undeclared counts as breaking");
    }
}
