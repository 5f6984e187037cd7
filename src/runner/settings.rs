//! [`RunnerSettings`]: the runner settings one process runs with, and the operations an operator
//! applies under them — the guarded flag change and the inspection of an organization. `serve`
//! builds one from its own settings for the admin pages and API; the `orgs` CLI builds one from
//! the settings it is given. Both call these same functions.

use crate::db::flag_changes::FlagChange;
use crate::db::{Db, DbError, organizations};
use crate::domain::version::MinVersions;

use super::{FlagError, FlagPolicy, FlagUpdate, OrgRunner, Resolver, inspect_org, set_runner_flag};

/// The runner pools, minimum worker versions and resolver of one process.
#[derive(Debug, Clone)]
pub struct RunnerSettings {
    /// Decides the runner of a new dispatch.
    pub resolver: Resolver,
    /// The runner pools (HEARTH_RUNNERS), the default first.
    pub runners: Vec<String>,
    /// The minimum worker version per runtime (HEARTH_RUNNER_MIN_VERSION).
    pub min_versions: MinVersions,
}

impl RunnerSettings {
    /// Sets or clears an organization's runner flag through the healthy-worker guard, audited
    /// ([`set_runner_flag`]).
    ///
    /// # Errors
    /// See [`set_runner_flag`].
    pub async fn set_flag(&self, db: &Db, update: FlagUpdate) -> Result<FlagChange, FlagError> {
        let policy = FlagPolicy { runners: &self.runners, min_versions: &self.min_versions };
        set_runner_flag(db, policy, update).await
    }

    /// One organization's flag, effective runner and why, and its `changes` latest audit rows
    /// ([`inspect_org`]); `None` for an unknown slug.
    ///
    /// # Errors
    /// On a storage failure.
    pub async fn inspect(&self, db: &Db, slug: &str, changes: u32) -> Result<Option<OrgRunner>, DbError> {
        inspect_org(db, &self.resolver, slug, changes).await
    }

    /// Every organization, inspected as [`Self::inspect`] does (without audit rows), by slug.
    ///
    /// # Errors
    /// On a storage failure.
    pub async fn inspect_all(&self, db: &Db) -> Result<Vec<OrgRunner>, DbError> {
        let slugs: Vec<String> =
            db.read(organizations::list_organizations).await?.into_iter().map(|o| o.slug).collect();
        let mut out = Vec::with_capacity(slugs.len());
        for slug in slugs {
            if let Some(org) = self.inspect(db, &slug, 0).await? {
                out.push(org);
            }
        }
        Ok(out)
    }
}
