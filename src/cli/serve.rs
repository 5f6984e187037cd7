//! `hearth serve`: open and migrate the database, bootstrap, serve until a signal.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::ConfigError;
use crate::app::{App, AppParts, AppState};
use crate::auth::jwt::JwtVerifier;
use crate::catalog::Catalog;
use crate::config::ServeConfig;
use crate::db::migrate::{self, SchemaState};
use crate::db::{Db, checkpoint};
use crate::llm::{Models, ProviderSettings};
use crate::replication::RoleSource;
use crate::runner::Resolver;
use crate::{bootstrap, metrics, server, worker};

/// Runs the server until SIGTERM or SIGINT, then shuts down gracefully.
///
/// # Errors
/// On bad settings, an unusable database, or a port that cannot be bound.
pub async fn run(db_path: &Path, config: ServeConfig) -> anyhow::Result<()> {
    let started = Instant::now();
    let static_key = config.auth.static_api_key().map_err(ConfigError)?;
    let rules = config.runner.resolver_rules().map_err(ConfigError)?;
    let jwt = JwtVerifier::from_config(&config).map_err(ConfigError)?;
    let mcp_servers = config.mcp.servers().map_err(ConfigError)?;
    let models = build_models(&config.upstream, &mcp_servers)?;
    let metrics = metrics::install().map_err(|e| anyhow::anyhow!("metrics recorder: {e}"))?;
    let role = RoleSource::new(config.storage.litefs_dir.as_deref()).current();
    let db = Db::open(db_path, config.storage.db_readers)?;
    prepare_schema(db_path, role.is_writer(), config.storage.auto_migrate)?;
    let default_org = if role.is_writer() {
        let boot = bootstrap::ensure(&db, config.auth.admin_token.is_some(), static_key.is_some()).await?;
        bootstrap::announce(&boot);
        boot.default_org
    } else {
        bootstrap::find_default_org(&db).await?
    };
    let mcp = super::mcp::build(&config.mcp, mcp_servers, Some((&db, role.is_writer()))).await?;
    let addr = SocketAddr::new(config.http.host, config.http.port);
    let listener = server::bind(config.http.host, config.http.port)
        .map_err(|e| ConfigError(format!("cannot listen on {addr} (PORT / HEARTH_HOST): {e}")))?;
    let local = listener.local_addr()?;
    let grace = Duration::from_secs(config.http.shutdown_grace_s);
    let embedded = (role.is_writer() && !config.queue.no_embedded_workers && config.queue.workers > 0)
        .then_some(usize::from(config.queue.workers));
    let default_runner = rules.default_runner().to_owned();
    let resolver = Resolver::new(rules);
    let state = App::build(AppParts {
        config,
        db: db.clone(),
        metrics,
        default_org,
        static_key,
        resolver,
        jwt,
        models,
        mcp,
    });
    state.mcp().start(state.tasks(), state.shutdown());
    if let Some(capacity) = embedded {
        worker::embedded::start(worker::embedded::Embedded {
            queue: std::sync::Arc::clone(state.queue()),
            executor: std::sync::Arc::clone(state.executor()),
            runner: default_runner,
            capacity,
            heartbeat: Duration::from_secs(state.config().queue.heartbeat_s),
            shutdown: state.shutdown().clone(),
            tasks: state.tasks().clone(),
        })
        .await?;
    }
    tracing::info!(
        addr = %local,
        db = %db_path.display(),
        role = role.as_str(),
        startup_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "listening"
    );
    watch_signals(&state);
    prune_rate_limits(&state);
    if role.is_writer() {
        state.tasks().spawn(checkpoint::run_policy(db.clone(), state.shutdown().clone()));
        let every = Duration::from_secs(state.config().queue.heartbeat_s);
        state.tasks().spawn(crate::queue::run_sweeper(
            std::sync::Arc::clone(state.queue()),
            every,
            state.shutdown().clone(),
        ));
    }
    server::serve(listener, state.clone(), grace).await.context("serving HTTP")?;
    finish(&state, &db).await;
    Ok(())
}

/// The models requests may name: the providers configured, `hearth.toml`'s aliases and
/// agents, the default model.
///
/// # Errors
/// A message naming the setting that is wrong.
pub(super) fn build_models(
    upstream: &crate::config::UpstreamConfig,
    mcp_servers: &[crate::config::McpServerConfig],
) -> Result<Models, ConfigError> {
    let catalog = match &upstream.config {
        Some(path) => Catalog::load(path).map_err(ConfigError)?,
        None => Catalog::default(),
    };
    let names: Vec<&str> = mcp_servers.iter().map(|s| s.name.as_str()).collect();
    catalog.check_mcp_servers(&names).map_err(|e| ConfigError(format!("HEARTH_CONFIG: {e}")))?;
    Models::build(&ProviderSettings::from_config(upstream), catalog, upstream.model_specifier.clone())
        .map_err(ConfigError)
}

/// Brings the schema up to date (writer nodes with auto-migrate) or checks that it is.
fn prepare_schema(path: &Path, writer: bool, auto_migrate: bool) -> anyhow::Result<()> {
    let conn = rusqlite::Connection::open(path)?;
    conn.execute_batch("PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;")?;
    match migrate::state(&conn)? {
        SchemaState::Current => Ok(()),
        SchemaState::Behind { .. } if writer && auto_migrate => {
            for name in migrate::migrate_to(&conn, None)? {
                tracing::info!(migration = name, "applied migration");
            }
            Ok(())
        }
        SchemaState::Behind { applied, latest } if writer => Err(ConfigError(format!(
            "the database at {} has {applied} of {latest} migrations applied and \
             HEARTH_AUTO_MIGRATE is false: run `hearth migrate` first",
            path.display()
        ))
        .into()),
        SchemaState::Behind { applied, latest } => Err(ConfigError(format!(
            "this LiteFS replica's database has {applied} of {latest} migrations applied; \
             the primary migrates it: start or upgrade the primary first"
        ))
        .into()),
        SchemaState::Ahead { found, latest } => Err(ConfigError(format!(
            "the database at {} is at schema {found}, newer than this hearth ({latest}): upgrade hearth",
            path.display()
        ))
        .into()),
    }
}

/// Every minute, forgets the rate-limit state of keys and users whose limit has replenished.
fn prune_rate_limits(state: &AppState) {
    let (app, shutdown) = (state.clone(), state.shutdown().clone());
    state.tasks().spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(60)) => app.auth().prune_limits(),
                () = shutdown.cancelled() => return,
            }
        }
    });
}

/// Cancels the app's shutdown token on SIGTERM or SIGINT.
fn watch_signals(state: &AppState) {
    let token = state.shutdown().clone();
    state.tasks().spawn(async move {
        let signal = wait_for_signal().await;
        tracing::info!(signal, "signal received");
        token.cancel();
    });
}

async fn wait_for_signal() -> &'static str {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                () = ctrl_c => "SIGINT",
            },
            Err(_) => {
                ctrl_c.await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        ctrl_c.await;
        "SIGINT"
    }
}

/// Waits for background tasks, then checkpoints and closes the database.
async fn finish(state: &AppState, db: &Db) {
    state.shutdown().cancel();
    state.tasks().close();
    if tokio::time::timeout(Duration::from_secs(10), state.tasks().wait()).await.is_err() {
        tracing::warn!("background tasks did not stop within 10 s");
    }
    let checkpoint =
        db.read(|conn| Ok(conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?)).await;
    if let Err(e) = checkpoint {
        tracing::warn!(error = %e, "final WAL checkpoint failed (the WAL will be replayed on next open)");
    }
    tracing::info!("stopped; database closed");
}
