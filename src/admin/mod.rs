//! The admin inspector's service: what `/admin` pages and `/admin/api` calls read and change —
//! workers (and draining one), organizations and their runner flags (through the same guarded,
//! audited functions as the `orgs` CLI), API keys (through `auth::keys`, as `hearth keys`),
//! sessions with their runs and events, the overview — and the admin logins themselves.
//!
//! No SQL lives here (it is in `db/`), and nothing here knows HTTP.

mod login;
mod overview;
mod sessions;
mod workers;

pub use login::{LoginSession, NewLogin};
pub use overview::{Overview, RunnerLoad};
pub use sessions::{SessionDetail, SessionPage, SessionQuery, TimedRun};
pub use workers::{WorkerView, worker_views};

use std::time::Duration;

use crate::auth::keys::{self, KeyError, Revocation};
use crate::db::api_keys::{self, ApiKey};
use crate::db::flag_changes::FlagChange;
use crate::db::{Db, DbError, organizations};
use crate::ids::WorkerId;
use crate::runner::{FlagError, FlagUpdate, OrgRunner, RunnerSettings};

/// Why an admin operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No admin token, or a wrong one.
    #[error("invalid admin token")]
    BadToken,
    /// Too many login attempts from this client.
    #[error("too many login attempts from this address; retry in {retry_after} s")]
    RateLimited {
        /// Seconds until a retry can succeed.
        retry_after: u64,
    },
    /// Bad input.
    #[error("{message}")]
    Invalid {
        /// The field.
        param: &'static str,
        /// What is wrong.
        message: String,
    },
    /// No such thing.
    #[error("{0}")]
    NotFound(String),
    /// The runner-flag change was refused (guard, unknown runner or organization).
    #[error(transparent)]
    Flag(#[from] FlagError),
    /// The key operation was refused.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Storage failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// A minted key with its organization's slug and its secret (shown once).
#[derive(Debug, Clone)]
pub struct MintedKey {
    /// The key row.
    pub key: ApiKey,
    /// Its organization's slug.
    pub org_slug: String,
    /// The secret: returned here only.
    pub secret: String,
}

/// An API key with its organization's slug, for listings.
#[derive(Debug, Clone)]
pub struct KeyListing {
    /// The key row.
    pub key: ApiKey,
    /// Its organization's slug (`None` if the row is gone).
    pub org_slug: Option<String>,
}

/// Settings of the admin service.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// HEARTH_ADMIN_TOKEN, when set: accepted besides the stored admin tokens.
    pub env_token: Option<crate::config::Secret>,
    /// How long a browser login lasts.
    pub session_ttl: Duration,
    /// Login attempts allowed per client address and minute.
    pub logins_per_minute: u32,
}

/// The admin service.
pub struct Admin {
    db: Db,
    runner: RunnerSettings,
    login: login::Logins,
}

impl Admin {
    /// The service over `db`, deciding and guarding runners with `runner` (`serve`'s settings).
    #[must_use]
    pub fn new(db: Db, runner: RunnerSettings, settings: &AdminSettings) -> Self {
        Self { login: login::Logins::new(settings), db, runner }
    }

    /// The runner settings it decides with.
    #[must_use]
    pub fn runner(&self) -> &RunnerSettings {
        &self.runner
    }

    /// Every worker with its health, heartbeat age and whether its version is below the minimum.
    ///
    /// # Errors
    /// On a storage failure.
    pub async fn workers(&self) -> Result<Vec<WorkerView>, DbError> {
        worker_views(&self.db, Some(&self.runner.min_versions)).await
    }

    /// Marks an external worker draining: its next heartbeat tells it to finish what it holds
    /// and claim nothing new.
    ///
    /// # Errors
    /// An unknown or embedded worker, or a storage failure.
    pub async fn drain_worker(&self, id: &str) -> Result<(), AdminError> {
        workers::drain(&self.db, id.parse::<WorkerId>().ok(), id).await
    }

    /// Every organization with its flag and effective runner, by slug.
    ///
    /// # Errors
    /// On a storage failure.
    pub async fn orgs(&self) -> Result<Vec<OrgRunner>, DbError> {
        self.runner.inspect_all(&self.db).await
    }

    /// Every organization's slug, sorted (for the pages' filters and forms).
    ///
    /// # Errors
    /// On a storage failure.
    pub async fn org_slugs(&self) -> Result<Vec<String>, DbError> {
        let orgs = self.db.read(organizations::list_organizations).await?;
        Ok(orgs.into_iter().map(|o| o.slug).collect())
    }

    /// One organization with its latest `changes` audit rows.
    ///
    /// # Errors
    /// An unknown slug, or a storage failure.
    pub async fn org(&self, slug: &str, changes: u32) -> Result<OrgRunner, AdminError> {
        self.runner
            .inspect(&self.db, slug, changes)
            .await?
            .ok_or_else(|| AdminError::NotFound(format!("no organization with slug `{slug}`")))
    }

    /// Sets or clears a runner flag through the guard, audited (the `orgs` CLI's function).
    ///
    /// # Errors
    /// See [`RunnerSettings::set_flag`].
    pub async fn set_runner(&self, update: FlagUpdate) -> Result<FlagChange, AdminError> {
        Ok(self.runner.set_flag(&self.db, update).await?)
    }

    /// Mints an API key for the organization `org_slug` (the `keys create` CLI's function).
    ///
    /// # Errors
    /// An unknown organization, a bad name, or a storage failure.
    pub async fn mint_key(&self, org_slug: &str, name: &str) -> Result<MintedKey, AdminError> {
        let (key, secret) = keys::create_key(&self.db, org_slug, name, None).await?;
        Ok(MintedKey { key, org_slug: org_slug.to_owned(), secret })
    }

    /// Revokes an API key; idempotent (the `keys revoke` CLI's function).
    ///
    /// # Errors
    /// An unknown key, or a storage failure.
    pub async fn revoke_key(&self, id: &str) -> Result<Revocation, AdminError> {
        Ok(keys::revoke_key(&self.db, id).await?)
    }

    /// Every API key with its organization's slug, newest first.
    ///
    /// # Errors
    /// On a storage failure.
    pub async fn keys(&self) -> Result<Vec<KeyListing>, DbError> {
        self.db
            .read(|conn| {
                let orgs = organizations::list_organizations(conn)?;
                let keys = api_keys::list_api_keys(conn, None)?;
                Ok(keys
                    .into_iter()
                    .map(|key| {
                        let org_slug =
                            orgs.iter().find(|o| o.id == key.organization_id).map(|o| o.slug.clone());
                        KeyListing { key, org_slug }
                    })
                    .collect())
            })
            .await
    }

    /// The overview: queues, workers per runner, runs of the last hour, recent failures.
    ///
    /// # Errors
    /// On a storage failure.
    pub async fn overview(&self) -> Result<Overview, DbError> {
        overview::overview(&self.db, &self.runner).await
    }

    /// A page of sessions.
    ///
    /// # Errors
    /// Bad filters, or a storage failure.
    pub async fn sessions(&self, query: SessionQuery) -> Result<SessionPage, AdminError> {
        sessions::search(&self.db, query).await
    }

    /// One session with its runs, messages and events.
    ///
    /// # Errors
    /// An unknown session, or a storage failure.
    pub async fn session(&self, id: &str) -> Result<SessionDetail, AdminError> {
        sessions::detail(&self.db, id).await
    }

    /// Whether `token` is an admin token (HEARTH_ADMIN_TOKEN or a stored one), compared in
    /// constant time.
    ///
    /// # Errors
    /// On a storage failure.
    pub async fn verify_token(&self, token: &str) -> Result<bool, DbError> {
        self.login.verify(&self.db, token).await
    }

    /// Logs a browser in with the admin token, from `client` (rate-limited per client).
    ///
    /// # Errors
    /// Over the rate limit, a wrong token, or a storage failure.
    pub async fn login(&self, client: std::net::IpAddr, token: &str) -> Result<NewLogin, AdminError> {
        self.login.login(&self.db, client, token).await
    }

    /// The live login of this cookie value, if any.
    ///
    /// # Errors
    /// On a storage failure.
    pub async fn login_session(&self, cookie: &str) -> Result<Option<LoginSession>, DbError> {
        self.login.session(&self.db, cookie).await
    }

    /// Ends the login of this cookie value.
    ///
    /// # Errors
    /// On a storage failure.
    pub async fn logout(&self, cookie: &str) -> Result<(), DbError> {
        self.login.logout(&self.db, cookie).await
    }

    /// Forgets the login rate limits of clients whose limit has replenished.
    pub fn prune(&self) {
        self.login.prune();
    }
}
