//! Settings every subcommand shares: the database file, logging and the async threads.

use std::fmt;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::parse::parse_log_filter;

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (the default; what log shippers want).
    Json,
    /// Human-readable lines for a terminal.
    Text,
}

/// Settings every subcommand shares: where the database is and how to log.
#[derive(Debug, Clone, Args)]
pub struct GlobalConfig {
    /// SQLite database file [default: ./data/hearth.db]. Wins over DATABASE_URL.
    #[arg(long, env = "HEARTH_DB", value_name = "PATH", global = true)]
    pub db: Option<PathBuf>,

    /// Database as a URL, `sqlite:PATH` or `sqlite://PATH`; used when HEARTH_DB is unset. Any
    /// other URL (say, a Postgres one left from an older deployment) is ignored, with a warning,
    /// when HEARTH_DB is set, and refused when it is not.
    #[arg(long, env = "DATABASE_URL", value_name = "URL", global = true, hide_env_values = true,
          value_parser = DatabaseUrl::parse)]
    pub database_url: Option<DatabaseUrl>,

    /// Log filter: a level (error, warn, info, debug, trace) or tracing directives
    /// such as `info,hearth=debug`.
    #[arg(long, env = "HEARTH_LOG", value_name = "FILTER", default_value = "info", global = true,
          value_parser = parse_log_filter)]
    pub log: String,

    /// Async worker threads [default: one per CPU core].
    #[arg(long, env = "HEARTH_THREADS", value_name = "N", global = true,
          value_parser = clap::value_parser!(u16).range(1..=512))]
    pub threads: Option<u16>,

    /// Log line format on stderr.
    #[arg(long, env = "HEARTH_LOG_FORMAT", value_enum, default_value = "json", global = true)]
    pub log_format: LogFormat,
}

impl GlobalConfig {
    /// The database file: `--db`/HEARTH_DB, else DATABASE_URL's file, else `./data/hearth.db`.
    ///
    /// # Errors
    /// A message naming DATABASE_URL when it alone names the database and is no SQLite file URL.
    pub fn db_path(&self) -> Result<PathBuf, String> {
        match (&self.db, &self.database_url) {
            (Some(db), _) => Ok(db.clone()),
            (None, Some(url)) => url.sqlite_path().map_err(|e| {
                format!(
                    "invalid DATABASE_URL (--database-url), {}: {e}; or name the SQLite file with \
                     HEARTH_DB (--db)",
                    url.kind()
                )
            }),
            (None, None) => Ok(PathBuf::from("data/hearth.db")),
        }
    }

    /// A DATABASE_URL that names no SQLite file but is ignored, `--db`/HEARTH_DB naming the
    /// database: worth a warning, since it may be a leftover of an older deployment.
    #[must_use]
    pub fn ignored_database_url(&self) -> Option<&DatabaseUrl> {
        match (&self.db, &self.database_url) {
            (Some(_), Some(url)) if url.sqlite_path().is_err() => Some(url),
            _ => None,
        }
    }
}

/// The DATABASE_URL setting as given. It may carry a password, so it is never shown: its
/// `Debug` and [`DatabaseUrl::scheme`] give only the scheme.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// Takes any text: whether it is usable depends on the other settings ([`GlobalConfig::db_path`]).
    #[expect(clippy::unnecessary_wraps, reason = "clap's value parsers return a Result")]
    fn parse(s: &str) -> Result<Self, String> {
        Ok(Self(s.to_owned()))
    }

    /// The URL's scheme (`sqlite`, `postgres`, …), if it has one; safe to log.
    #[must_use]
    pub fn scheme(&self) -> Option<&str> {
        let scheme = self.0.split_once(':').map(|(scheme, _)| scheme)?;
        let valid = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        valid.then_some(scheme)
    }

    /// What kind of URL it is, for messages: `a postgres: URL`, or `a URL without a scheme`.
    #[must_use]
    pub fn kind(&self) -> String {
        self.scheme().map_or_else(|| "a URL without a scheme".to_owned(), |s| format!("a {s}: URL"))
    }

    /// The SQLite file the URL names.
    ///
    /// # Errors
    /// When it is not a `sqlite:` URL, or names no file.
    pub fn sqlite_path(&self) -> Result<PathBuf, String> {
        parse_sqlite_url(&self.0)
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({}:***)", self.scheme().unwrap_or_default())
    }
}

/// The file of a `sqlite:PATH` or `sqlite://PATH` URL (a `?query` is dropped).
fn parse_sqlite_url(s: &str) -> Result<PathBuf, String> {
    let path = s.strip_prefix("sqlite://").or_else(|| s.strip_prefix("sqlite:")).ok_or_else(|| {
        "only sqlite:PATH URLs are supported (hearth stores everything in one SQLite file)".to_owned()
    })?;
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Err("needs a file path, e.g. sqlite:./data/hearth.db".into());
    }
    Ok(PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_must_be_sqlite_files() {
        assert_eq!(parse_sqlite_url("sqlite:./x.db").unwrap(), PathBuf::from("./x.db"));
        assert_eq!(parse_sqlite_url("sqlite:///var/x.db").unwrap(), PathBuf::from("/var/x.db"));
        assert!(parse_sqlite_url("postgres://localhost/x").is_err());
        assert!(parse_sqlite_url("sqlite::memory:").is_err());
    }

    fn config(db: Option<&str>, url: Option<&str>) -> GlobalConfig {
        GlobalConfig {
            db: db.map(PathBuf::from),
            database_url: url.map(|u| DatabaseUrl::parse(u).unwrap()),
            log: "info".into(),
            threads: None,
            log_format: LogFormat::Json,
        }
    }

    #[test]
    fn hearth_db_wins_and_another_database_url_is_ignored_only_then() {
        let postgres = Some("postgres://u:secret@h/db");
        assert_eq!(config(Some("a.db"), postgres).db_path().unwrap(), PathBuf::from("a.db"));
        let ignored = config(Some("a.db"), postgres);
        assert_eq!(ignored.ignored_database_url().and_then(DatabaseUrl::scheme), Some("postgres"));
        assert!(config(Some("a.db"), Some("sqlite:b.db")).ignored_database_url().is_none());
        assert_eq!(config(None, Some("sqlite:b.db")).db_path().unwrap(), PathBuf::from("b.db"));
        assert_eq!(config(None, None).db_path().unwrap(), PathBuf::from("data/hearth.db"));
        let refused = config(None, postgres).db_path().unwrap_err();
        assert!(refused.contains("DATABASE_URL") && refused.contains("postgres"), "{refused}");
        assert!(!refused.contains("secret"), "{refused}");
        assert!(!format!("{:?}", config(None, postgres)).contains("secret"));
    }

    #[test]
    fn only_the_scheme_of_a_database_url_is_shown() {
        let kind = |u: &str| DatabaseUrl::parse(u).unwrap().kind();
        assert_eq!(kind("postgres://u:secret@h/db"), "a postgres: URL");
        assert_eq!(kind("postgresql+psycopg://h/db"), "a postgresql+psycopg: URL");
        assert_eq!(kind("u:secret@h/db"), "a u: URL");
        assert_eq!(kind("user secret@h:5432"), "a URL without a scheme");
        assert_eq!(kind("/var/x.db"), "a URL without a scheme");
        assert_eq!(kind(""), "a URL without a scheme");
    }
}
