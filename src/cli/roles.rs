//! `hearth serve`'s LiteFS roles, live: what a node does as a writer (standalone or primary)
//! and stops doing as a replica, switched while it serves.
//!
//! A writer runs migrations (at start, and again on promotion: the new primary may be a newer
//! binary), the first-run bootstrap, the embedded worker pool, the lease sweeper and the WAL
//! checkpoint policy. A replica runs none of them: it serves reads, and the HTTP layer answers
//! writes with `fly-replay` (`http::replica`). A watcher polls the mount's `.primary` file every
//! [`ROLE_POLL`] and starts the writer's duties on promotion, or stops them on demotion
//! (the pool stops claiming and heartbeating; see docs/DEPLOY.md "LiteFS roles" for the runs in
//! flight). Rate-limit pruning is in memory only and runs on every node.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::ConfigError;
use crate::app::AppState;
use crate::db::migrate::{self, SchemaState};
use crate::db::{Db, checkpoint};
use crate::ids::OrgId;
use crate::replication::{Role, RoleSource};
use crate::{bootstrap, worker};

/// How often the watcher reads `.primary` (and a waiting replica looks at the schema again).
pub const ROLE_POLL: Duration = Duration::from_secs(1);

/// Brings the schema up to date (with auto-migrate) or checks that it is, on a writer.
///
/// # Errors
/// A database behind with auto-migrate off, one too new for this binary, or SQLite failing.
pub fn prepare_schema(path: &Path, auto_migrate: bool) -> anyhow::Result<()> {
    let conn = rusqlite::Connection::open(path)?;
    conn.execute_batch("PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;")?;
    match migrate::state(&conn)? {
        SchemaState::Current => Ok(()),
        SchemaState::Readable { found, latest } => {
            tracing::warn!(
                found,
                latest,
                "the database was migrated by a newer hearth; its further migrations are all additive, so \
                 this hearth serves it as it is (a rollback)"
            );
            Ok(())
        }
        SchemaState::Behind { .. } if auto_migrate => {
            for name in migrate::migrate_to(&conn, None)? {
                tracing::info!(migration = name, "applied migration");
            }
            Ok(())
        }
        SchemaState::Behind { applied, latest } => Err(ConfigError(format!(
            "the database at {} has {applied} of {latest} migrations applied and \
             HEARTH_AUTO_MIGRATE is false: run `hearth migrate` first",
            path.display()
        ))
        .into()),
        SchemaState::Ahead { found, latest } => {
            Err(ConfigError(format!("{}: {}", path.display(), migrate::too_new(found, latest))).into())
        }
    }
}

/// What start-up needs to know to prepare the database.
pub struct Start<'a> {
    /// The database file.
    pub path: &'a Path,
    /// The store.
    pub db: &'a Db,
    /// Where the role is read.
    pub source: &'a RoleSource,
    /// HEARTH_AUTO_MIGRATE.
    pub auto_migrate: bool,
    /// The admin token comes from the environment.
    pub env_admin_token: bool,
    /// The API key comes from the environment.
    pub env_api_key: bool,
}

/// Prepares the database for serving and returns the `default` organization. A writer migrates
/// and bootstraps. A replica cannot: it waits, reading the role and the schema every
/// [`ROLE_POLL`], until the primary's migrations and first-run bootstrap have reached it, or
/// until it is promoted (then it does them itself).
///
/// # Errors
/// See [`prepare_schema`]; a schema too new for this binary stops a replica too.
pub async fn prepare(start: &Start<'_>) -> anyhow::Result<OrgId> {
    let mut told = false;
    loop {
        if start.source.current().is_writer() {
            prepare_schema(start.path, start.auto_migrate)?;
            let boot = bootstrap::ensure(start.db, start.env_admin_token, start.env_api_key).await?;
            bootstrap::announce(&boot);
            return Ok(boot.default_org);
        }
        let state = start.db.read(migrate::state).await?;
        match state {
            SchemaState::Ahead { found, latest } => {
                let path = start.path.display();
                return Err(ConfigError(format!("{path}: {}", migrate::too_new(found, latest))).into());
            }
            SchemaState::Current | SchemaState::Readable { .. } => {
                if let Ok(org) = bootstrap::find_default_org(start.db).await {
                    return Ok(org);
                }
            }
            SchemaState::Behind { .. } => {}
        }
        if !told {
            tracing::warn!(
                "this LiteFS replica's database is not migrated and bootstrapped yet; the primary does \
                 that: waiting for it (or for this node's promotion)"
            );
            told = true;
        }
        tokio::time::sleep(ROLE_POLL).await;
    }
}

/// The writer's duties and what they need.
pub struct Duties {
    /// The app.
    pub state: AppState,
    /// The database file (migrated on promotion).
    pub path: PathBuf,
    /// Where the role is read.
    pub source: RoleSource,
    /// The embedded pool's runner and capacity, when it runs (`None`: HEARTH_WORKERS=0 or
    /// HEARTH_NO_EMBEDDED_WORKERS).
    pub embedded: Option<(String, usize)>,
}

impl Duties {
    /// Starts the duties now if `role` may write (before the server listens, so the first
    /// request finds the embedded pool), then watches the role for the rest of the process.
    ///
    /// # Errors
    /// When the embedded pool cannot register.
    pub async fn start(self, role: Role) -> anyhow::Result<()> {
        let active = if role.is_writer() { Some(self.begin().await?) } else { None };
        let tasks = self.state.tasks().clone();
        tasks.spawn(async move { self.watch(role, active).await });
        Ok(())
    }

    async fn watch(self, mut role: Role, mut active: Option<CancellationToken>) {
        let shutdown = self.state.shutdown().clone();
        loop {
            tokio::select! {
                () = tokio::time::sleep(ROLE_POLL) => {}
                () = shutdown.cancelled() => return,
            }
            let now = self.source.current();
            if now != role {
                tracing::info!(from = role.as_str(), to = now.as_str(), "role changed");
                role = now;
            }
            match (role.is_writer(), active.take()) {
                (true, None) => match self.promote().await {
                    Ok(token) => active = Some(token),
                    Err(e) => tracing::error!(error = %e, "could not take up the primary's duties; retrying"),
                },
                (false, Some(token)) => self.demote(&token),
                (_, kept) => active = kept,
            }
        }
    }

    /// On promotion: migrate (the new primary may be a newer binary), bootstrap, then start.
    async fn promote(&self) -> anyhow::Result<CancellationToken> {
        let auto_migrate = self.state.config().storage.auto_migrate;
        prepare_schema(&self.path, auto_migrate)?;
        let auth = &self.state.config().auth;
        let env_key = matches!(auth.static_api_key(), Ok(Some(_)));
        let boot = bootstrap::ensure(self.state.db(), auth.admin_token.is_some(), env_key).await?;
        bootstrap::announce(&boot);
        let token = self.begin().await?;
        tracing::info!("promoted: embedded workers, sweeper and checkpoints started");
        Ok(token)
    }

    /// Starts the embedded pool, the sweeper, the checkpoint policy and the pruning of old
    /// `Idempotency-Key`s under one token.
    async fn begin(&self) -> anyhow::Result<CancellationToken> {
        let state = &self.state;
        let token = state.shutdown().child_token();
        let heartbeat = Duration::from_secs(state.config().queue.heartbeat_s);
        if let Some((runner, capacity)) = &self.embedded {
            let pool = worker::embedded::Embedded {
                name: worker::embedded::default_name(),
                queue: Arc::clone(state.queue()),
                executor: Arc::clone(state.executor()),
                runner: runner.clone(),
                capacity: *capacity,
                heartbeat,
                shutdown: token.clone(),
                tasks: state.tasks().clone(),
            };
            if let Err(e) = worker::embedded::start(pool).await {
                token.cancel();
                return Err(e.into());
            }
        }
        state.tasks().spawn(checkpoint::run_policy(state.db().clone(), token.clone()));
        state.tasks().spawn(crate::queue::run_sweeper(Arc::clone(state.queue()), heartbeat, token.clone()));
        super::serve::prune_idempotency_keys(state, &token);
        Ok(token)
    }

    /// On demotion: nothing more is claimed, heartbeated, swept, pruned or checkpointed here.
    fn demote(&self, token: &CancellationToken) {
        token.cancel();
        self.state.queue().clear_local();
        tracing::info!(
            "demoted to replica: embedded workers, sweeper and checkpoints stopped; writes are replayed to the primary"
        );
    }
}
