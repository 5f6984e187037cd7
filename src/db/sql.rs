//! SQL helpers every table's module shares: multi-row inserts, JSON bound as text, timestamps.

/// Rows one multi-row `INSERT` carries at most. A turn's events (or messages) go in one
/// statement rather than one each: SQLite's per-statement work (cursors opened, the tree
/// descended from the root, the statement reset) is most of a small row's cost.
pub const ROWS_PER_INSERT: usize = 8;

/// Multi-row `INSERT`s of one shape, for 1 to [`ROWS_PER_INSERT`] rows, each built once.
pub struct RowsInsert {
    head: &'static str,
    row: &'static str,
    shared: usize,
    per_row: usize,
    built: std::sync::OnceLock<Vec<String>>,
}

impl RowsInsert {
    /// `head VALUES row, row, …`: in `row`, `?N` (N ≤ `shared`) is a parameter every row shares
    /// and `$K` (K from 0 to `per_row` − 1) the row's own K-th, numbered after the shared ones
    /// row by row.
    #[must_use]
    pub const fn new(head: &'static str, row: &'static str, shared: usize, per_row: usize) -> Self {
        Self { head, row, shared, per_row, built: std::sync::OnceLock::new() }
    }

    /// The statement for `n` rows (clamped to 1..=[`ROWS_PER_INSERT`]).
    pub fn sql(&self, n: usize) -> &str {
        let all = self.built.get_or_init(|| {
            (1..=ROWS_PER_INSERT)
                .map(|n| {
                    let rows: Vec<String> = (0..n)
                        .map(|i| {
                            (0..self.per_row).rev().fold(self.row.to_owned(), |row, k| {
                                row.replace(&format!("${k}"), &format!("?{}", self.param(i, k)))
                            })
                        })
                        .collect();
                    format!("{} VALUES {}", self.head, rows.join(", "))
                })
                .collect()
        });
        all.get(n.clamp(1, ROWS_PER_INSERT) - 1).map_or("", String::as_str)
    }

    /// The number of row `i`'s own `k`-th parameter.
    #[must_use]
    pub const fn param(&self, i: usize, k: usize) -> usize {
        self.shared + 1 + i * self.per_row + k
    }
}

/// A value bound as its JSON text, written straight into one buffer (a `Value`'s `Display`
/// goes through the formatting machinery, write by write: ~7 % of a chat turn's instructions
/// before this). A value that does not serialize fails the statement: nothing is stored as
/// `null` in its place.
pub struct JsonText<'a, T: serde::Serialize + ?Sized = serde_json::Value>(pub &'a T);

impl<T: serde::Serialize + ?Sized> rusqlite::ToSql for JsonText<'_, T> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        let text = serde_json::to_string(self.0)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        Ok(rusqlite::types::ToSqlOutput::from(text))
    }
}

/// Milliseconds since the Unix epoch, the unit of every stored timestamp.
#[must_use]
pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod statement_tests {
    use rusqlite::{Connection, StatementStatus};

    fn reprepares(sql: &str) -> i32 {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (k TEXT, n INTEGER, PRIMARY KEY (k, n)) WITHOUT ROWID").unwrap();
        for limit in 1..=3 {
            conn.prepare_cached(sql)
                .unwrap()
                .query_map(rusqlite::params!["k", limit], |_| Ok(()))
                .unwrap()
                .count();
        }
        conn.prepare_cached(sql).unwrap().get_status(StatementStatus::RePrepare)
    }

    #[test]
    fn a_bound_limit_is_written_so_the_statement_is_not_prepared_again() {
        let bare = concat!("SELECT n FROM t WHERE k = ?1 ORDER BY n LIMIT ", "?2");
        assert!(reprepares(bare) > 0, "SQLite changed: revisit");
        assert_eq!(reprepares("SELECT n FROM t WHERE k = ?1 ORDER BY n LIMIT +?2"), 0);
    }

    /// Every source file under `src/db` (where the SQL lives), subdirectories included, with its
    /// text.
    fn db_sources() -> Vec<(std::path::PathBuf, String)> {
        let mut dirs = vec![std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/db")];
        let mut files = Vec::new();
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    files.push((path.clone(), std::fs::read_to_string(&path).unwrap()));
                }
            }
        }
        assert!(files.len() > 10, "src/db holds the SQL: found only {} files", files.len());
        files
    }

    #[test]
    fn no_statement_binds_a_bare_limit() {
        for (path, text) in db_sources() {
            // `LIMIT ?` and a parameter number: a bound limit as SQL writes it.
            let bare = text
                .match_indices("LIMIT ?")
                .filter(|(at, m)| text[at + m.len()..].chars().next().is_some_and(|c| c.is_ascii_digit()));
            assert_eq!(bare.count(), 0, "{} binds a bare `LIMIT ?`: write `LIMIT +?N`", path.display());
        }
    }

    #[test]
    fn a_long_constant_in_list_opens_a_temporary_table_each_run() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (k TEXT, s TEXT); CREATE INDEX t_ks ON t (k, s);").unwrap();
        let temporary = |sql: &str| {
            let mut stmt = conn.prepare(&format!("EXPLAIN {sql}")).unwrap();
            let ops: Vec<String> = stmt.query_map([], |r| r.get(1)).unwrap().map(Result::unwrap).collect();
            ops.iter().filter(|op| *op == "OpenEphemeral").count()
        };
        assert!(temporary(concat!("SELECT 1 FROM t WHERE k = 'a' AND s IN ", "('x', 'y', 'z')")) > 0);
        assert_eq!(temporary("SELECT 1 FROM t WHERE k = 'a' AND s = 'x'"), 0);
    }

    #[test]
    fn no_statement_has_a_long_constant_in_list() {
        // See the test above: each run of such a statement builds and drops a b-tree (the runs
        // status CHECK and the session-settling query cost ~11 % of a turn's instructions).
        for (path, text) in db_sources() {
            for (at, _) in text.match_indices("IN ('") {
                let list = &text[at + "IN ".len()..];
                let list = &list[..list.find(')').unwrap_or(list.len())];
                assert!(
                    list.matches(',').count() < 2,
                    "{}: `IN {list})`: write equalities (or list at most two values)",
                    path.display()
                );
            }
        }
    }
}
