//! Settings of the store at run time: migrations at start, LiteFS, and the reader pool.

use std::path::PathBuf;

use clap::Args;

use super::parse::parse_bool;

/// How `serve` opens and prepares the database (its file is a global setting).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Storage")]
pub struct StorageConfig {
    /// Apply pending migrations at start (primary only). With `false`, an unmigrated database
    /// stops start-up with a hint to run `hearth migrate`.
    #[arg(long, env = "HEARTH_AUTO_MIGRATE", value_name = "BOOL", default_value = "true",
          value_parser = parse_bool,
          action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub auto_migrate: bool,

    /// LiteFS mount directory; its `.primary` file tells this node's role. Unset: standalone.
    #[arg(long, env = "HEARTH_LITEFS_DIR", value_name = "DIR")]
    pub litefs_dir: Option<PathBuf>,

    /// Read connections in the SQLite pool.
    #[arg(long, env = "HEARTH_DB_READERS", value_name = "N", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=256))]
    pub db_readers: u32,
}
