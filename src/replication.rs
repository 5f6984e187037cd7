//! This node's role: standalone, or a LiteFS primary or replica read from the mount's `.primary`.
//!
//! LiteFS writes `.primary` (holding the primary's name) on replicas and removes it on the
//! primary. The role is read from the file system on demand, so it follows LiteFS live.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// The role of this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "role")]
pub enum Role {
    /// No LiteFS: this node owns the database.
    Standalone,
    /// The LiteFS primary: may write.
    Primary,
    /// A LiteFS replica: read-only; writes are replayed to `primary`.
    Replica {
        /// The primary's name, from `.primary`.
        primary: String,
    },
}

impl Role {
    /// `standalone`, `primary` or `replica`.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Standalone => "standalone",
            Self::Primary => "primary",
            Self::Replica { .. } => "replica",
        }
    }

    /// Whether this node may write (run migrations, workers, background tasks).
    #[must_use]
    pub fn is_writer(&self) -> bool {
        !matches!(self, Self::Replica { .. })
    }
}

/// Reads the role from a LiteFS mount directory (`None`: standalone).
#[derive(Debug, Clone)]
pub struct RoleSource {
    litefs_dir: Option<PathBuf>,
}

impl RoleSource {
    /// A source reading `dir/.primary`, or always standalone without a directory.
    #[must_use]
    pub fn new(litefs_dir: Option<&Path>) -> Self {
        Self { litefs_dir: litefs_dir.map(Path::to_path_buf) }
    }

    /// The role now.
    #[must_use]
    pub fn current(&self) -> Role {
        let Some(dir) = &self.litefs_dir else {
            return Role::Standalone;
        };
        match std::fs::read_to_string(dir.join(".primary")) {
            Ok(text) => Role::Replica { primary: text.trim().to_owned() },
            Err(_) => Role::Primary,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_follows_the_primary_file() {
        let dir = tempfile::tempdir().unwrap();
        let source = RoleSource::new(Some(dir.path()));
        assert_eq!(source.current(), Role::Primary);
        std::fs::write(dir.path().join(".primary"), "machine-a\n").unwrap();
        assert_eq!(source.current(), Role::Replica { primary: "machine-a".into() });
        assert!(!source.current().is_writer());
        assert_eq!(RoleSource::new(None).current(), Role::Standalone);
    }
}
