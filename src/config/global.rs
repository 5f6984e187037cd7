//! Settings every subcommand shares: the database file, logging and the async threads.

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

    /// Database as a URL, `sqlite:PATH` or `sqlite://PATH`; used when HEARTH_DB is unset.
    #[arg(long, env = "DATABASE_URL", value_name = "URL", global = true, value_parser = parse_sqlite_url)]
    pub database_url: Option<PathBuf>,

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
    /// The database file: `--db`/HEARTH_DB, else DATABASE_URL, else `./data/hearth.db`.
    #[must_use]
    pub fn db_path(&self) -> PathBuf {
        self.db
            .clone()
            .or_else(|| self.database_url.clone())
            .unwrap_or_else(|| PathBuf::from("data/hearth.db"))
    }
}

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
}
