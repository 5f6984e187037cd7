//! `hearth migrate`: apply pending migrations and report what was done.

use std::path::Path;

use clap::Args;

use super::output;
use crate::db::migrate;

/// Flags of `hearth migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {}

/// Applies every pending migration to the database at `path` (created if missing).
///
/// # Errors
/// When the database cannot be opened or a migration fails.
pub fn run(path: &Path, _args: &MigrateArgs) -> anyhow::Result<()> {
    let db = crate::db::Db::open(path, 1)?;
    drop(db); // creates the directory and file with the pragmas applied
    let conn = rusqlite::Connection::open(path)?;
    conn.execute_batch("PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;")?;
    let applied = migrate::migrate_to(&conn, None)?;
    let version = migrate::schema_version(&conn)?;
    if applied.is_empty() {
        output::line(&format!("{}: already at schema version {version}; nothing to do", path.display()))?;
    } else {
        for name in &applied {
            output::line(&format!("applied {name}"))?;
        }
        output::line(&format!("{}: now at schema version {version}", path.display()))?;
    }
    Ok(())
}
