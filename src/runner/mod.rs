//! The runner resolver with its I/O: reads the organization's flags and applies the pure rules
//! of `domain::resolver` (org flag → ramp → default, failure-closed, kill switch).

use crate::db::{Db, organizations};
use crate::domain::resolver::{Decision, OrgFlags, ResolverRules};
use crate::ids::OrgId;

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

/// A worker whose heartbeat is older than this is unhealthy (SPEC §6).
pub const HEALTHY_WITHIN_MS: i64 = 120_000;

/// Why a runner flag could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum FlagError {
    /// No organization has this slug.
    #[error("no organization with slug `{0}`")]
    UnknownOrg(String),
    /// The runner is not one of HEARTH_RUNNERS.
    #[error("unknown runner `{0}` (HEARTH_RUNNERS lists the runners)")]
    UnknownRunner(String),
    /// No healthy worker serves the runner, and the change was not forced.
    #[error("no healthy worker of runner `{0}` is registered: start one first, or force the change")]
    NoHealthyWorker(String),
    /// Storage failed.
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
}

/// A requested change of an organization's `runner_default` flag.
#[derive(Debug, Clone)]
pub struct FlagUpdate {
    /// The organization's slug.
    pub org_slug: String,
    /// The runner, or `None` to clear the flag.
    pub runner: Option<String>,
    /// Skip the healthy-worker check (audited).
    pub force: bool,
    /// Who asks.
    pub actor: String,
    /// Why.
    pub reason: Option<String>,
}

/// Sets or clears `runner_default`, audited in `flag_changes`. Affects only new dispatches.
///
/// # Errors
/// Unknown organization or runner, no healthy worker (unless forced), or storage failure.
pub async fn set_runner_flag(
    db: &Db,
    known_runners: &[String],
    update: FlagUpdate,
) -> Result<crate::db::flag_changes::FlagChange, FlagError> {
    if let Some(runner) = &update.runner
        && !known_runners.contains(runner)
    {
        return Err(FlagError::UnknownRunner(runner.clone()));
    }
    db.write(move |conn| {
        let now = crate::db::now_ms();
        let Some(org) = organizations::find_organization_by_slug(conn, &update.org_slug)? else {
            return Ok(Err(FlagError::UnknownOrg(update.org_slug)));
        };
        if let Some(runner) = &update.runner
            && !update.force
            && crate::db::workers::count_healthy_workers(conn, runner, now - HEALTHY_WITHIN_MS)? == 0
        {
            return Ok(Err(FlagError::NoHealthyWorker(runner.clone())));
        }
        let mut features = org.features.clone();
        let old = features.get("runner_default").and_then(|v| v.as_str()).map(str::to_owned);
        match (&update.runner, features.as_object_mut()) {
            (Some(r), Some(map)) => {
                map.insert("runner_default".into(), serde_json::json!(r));
            }
            (None, Some(map)) => {
                map.remove("runner_default");
            }
            (runner, None) => features = serde_json::json!({"runner_default": runner}),
        }
        organizations::update_features(conn, &org.id, &features, now)?;
        let change = crate::db::flag_changes::FlagChange {
            organization_id: org.id,
            old,
            new: update.runner,
            actor: update.actor,
            reason: update.reason,
            forced: update.force,
            at: now,
        };
        crate::db::flag_changes::insert_flag_change(conn, &change)?;
        Ok(Ok(change))
    })
    .await?
}
