//! An organization's runner as an operator inspects it: the stored flag, the runner a new
//! dispatch would get now and why, and the latest audited changes.

use serde::Serialize;

use crate::db::flag_changes::{self, FlagChange};
use crate::db::organizations::{self, Organization};
use crate::db::{Db, DbError};

use super::Resolver;

/// An organization's runner flag, its effect and its history.
#[derive(Debug, Clone, Serialize)]
pub struct OrgRunner {
    /// The organization row (`features` is `null` when the stored text is not JSON).
    #[serde(flatten)]
    pub organization: Organization,
    /// Set when the stored `features` text is not JSON: that text (the resolver then fails
    /// closed to the default runner).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub features_not_json: Option<String>,
    /// `features.runner_default` as stored, whatever its JSON type (`None`: no flag).
    pub runner_default: Option<serde_json::Value>,
    /// The runner a new dispatch of this organization would get now.
    pub effective_runner: String,
    /// Why: the `runner_reason` that dispatch would stamp.
    pub runner_reason: String,
    /// The latest changes of the flag, newest first.
    pub flag_changes: Vec<FlagChange>,
}

/// Inspects the organization `slug`, deciding its runner with `resolver` exactly as a dispatch
/// would (same rules, same read of the row, failure-closed), with its `changes` latest audit
/// entries. `None` when no organization has that slug.
///
/// # Errors
/// On a storage failure.
pub async fn inspect_org(
    db: &Db,
    resolver: &Resolver,
    slug: &str,
    changes: u32,
) -> Result<Option<OrgRunner>, DbError> {
    let (resolver, slug) = (resolver.clone(), slug.to_owned());
    db.read(move |conn| {
        let Some((organization, stored)) = organizations::find_organization_as_stored(conn, &slug)? else {
            return Ok(None);
        };
        let decision = resolver.decide_with(conn, &organization.id);
        let flag_changes = flag_changes::list_flag_changes(conn, &organization.id, changes)?;
        let features_not_json = serde_json::from_str::<serde_json::Value>(&stored).is_err().then_some(stored);
        let runner_default = organization.features.get("runner_default").filter(|v| !v.is_null()).cloned();
        Ok(Some(OrgRunner {
            organization,
            features_not_json,
            runner_default,
            effective_runner: decision.runner,
            runner_reason: decision.reason,
            flag_changes,
        }))
    })
    .await
}
