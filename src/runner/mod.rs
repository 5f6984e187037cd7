//! The runner resolver with its I/O: reads the organization's flags and applies the pure rules
//! of `domain::resolver` (org flag → ramp → default, failure-closed, kill switch); changing a
//! flag (guarded, audited: `flags`); inspecting an organization's runner (`inspect`); both under
//! one process's settings (`settings`).

mod flags;
mod inspect;
mod settings;

pub use flags::{FlagError, FlagPolicy, FlagUpdate, set_runner_flag};
pub use inspect::{OrgRunner, inspect_org};
pub use settings::RunnerSettings;

use crate::db::organizations;
use crate::domain::resolver::{Decision, OrgFlags, ResolverRules};
use crate::ids::OrgId;

/// A worker whose heartbeat is older than this is unhealthy (SPEC §6).
pub const HEALTHY_WITHIN_MS: i64 = 120_000;

/// Resolves the runner of new dispatches.
#[derive(Debug, Clone)]
pub struct Resolver {
    rules: std::sync::Arc<ResolverRules>,
}

impl Resolver {
    /// A resolver with these rules.
    #[must_use]
    pub fn new(rules: ResolverRules) -> Self {
        Self { rules: std::sync::Arc::new(rules) }
    }

    /// Decides the runner for `org` with a connection the caller holds (inside the dispatch
    /// transaction, saving a round trip). Never fails: a read error resolves to the default.
    #[must_use]
    pub fn decide_with(&self, conn: &rusqlite::Connection, org: &OrgId) -> Decision {
        if !self.rules.flags_enabled {
            return self.rules.decide(org.as_str(), &OrgFlags::Missing);
        }
        let flags = match organizations::find_organization(conn, org) {
            Ok(Some(org)) => OrgFlags::Found(org.features),
            Ok(None) => OrgFlags::Missing,
            Err(e) => {
                tracing::warn!(error = %e, org.id = %org, "could not read runner flags; using the default runner");
                OrgFlags::Error(e.to_string())
            }
        };
        self.rules.decide(org.as_str(), &flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{Db, migrate};
    use crate::orgs::new_org;

    fn rules() -> ResolverRules {
        ResolverRules { runners: vec!["ts".into(), "go".into()], ramp: None, flags_enabled: true }
    }

    #[tokio::test]
    async fn reads_the_flag_and_fails_closed_on_a_database_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.db");
        let db = Db::open(&path, 2).unwrap();
        migrate::migrate_to(&rusqlite::Connection::open(&path).unwrap(), None).unwrap();
        let mut org = new_org("acme", None);
        org.features = serde_json::json!({"runner_default": "go"});
        let stored = org.clone();
        db.write(move |c| organizations::insert_organization(c, &stored)).await.unwrap();
        let resolver = Resolver::new(rules());
        let decide = |org: OrgId| {
            let resolver = resolver.clone();
            db.read(move |c| Ok(resolver.decide_with(c, &org)))
        };
        assert_eq!(decide(org.id.clone()).await.unwrap().runner, "go");
        assert!(decide(OrgId::new()).await.unwrap().reason.contains("not found"));
        // Break the table under the resolver: a database error must yield the default runner.
        db.write(|c| Ok(c.execute_batch("ALTER TABLE organizations RENAME TO gone")?)).await.unwrap();
        let decision = decide(org.id.clone()).await.unwrap();
        assert_eq!(decision.runner, "ts");
        assert!(decision.reason.starts_with("failure-closed: could not read"), "{}", decision.reason);
    }
}
