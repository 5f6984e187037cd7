//! The runner resolver with its I/O: reads the organization's flags and applies the pure rules
//! of `domain::resolver` (org flag → ramp → default, failure-closed, kill switch).

use crate::db::{Db, organizations};
use crate::domain::resolver::{Decision, OrgFlags, ResolverRules};
use crate::ids::OrgId;

/// Resolves the runner of new dispatches.
#[derive(Debug, Clone)]
pub struct Resolver {
    rules: ResolverRules,
}

impl Resolver {
    /// A resolver with these rules.
    #[must_use]
    pub fn new(rules: ResolverRules) -> Self {
        Self { rules }
    }

    /// The rules.
    #[must_use]
    pub fn rules(&self) -> &ResolverRules {
        &self.rules
    }

    /// Decides the runner for `org`. Never fails: any problem reading the flags resolves to the
    /// default runner, and `reason` says why.
    pub async fn resolve(&self, db: &Db, org: &OrgId) -> Decision {
        if !self.rules.flags_enabled {
            return self.rules.decide(org.as_str(), &OrgFlags::Missing);
        }
        let id = org.clone();
        let flags = match db.read(move |conn| organizations::find_organization(conn, &id)).await {
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
    use crate::db::migrate;
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
        assert_eq!(resolver.resolve(&db, &org.id).await.runner, "go");
        assert!(resolver.resolve(&db, &OrgId::new()).await.reason.contains("not found"));
        // Break the table under the resolver: a database error must yield the default runner.
        db.write(|c| Ok(c.execute_batch("ALTER TABLE organizations RENAME TO gone")?)).await.unwrap();
        let decision = resolver.resolve(&db, &org.id).await;
        assert_eq!(decision.runner, "ts");
        assert!(decision.reason.starts_with("failure-closed: could not read"), "{}", decision.reason);
    }
}
